//! The validated event and its contract JSON.

use chrono::{DateTime, Utc};

use super::types::{Channel, CloseReason, EventType, Family, FeedbackChannel, Level, ServiceLevel};

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
    pub agency_code: String,
    pub level: Level,
    /// The province since 2025-07-01: the code the event came with, or the one its
    /// pre-2025 code was remapped to (CONTRACT.md §7.7).
    pub province_code: Option<String>,
    pub commune_code: Option<String>,
    /// The pre-2025 province code the event came with, when it was remapped.
    pub province_code_original: Option<String>,
    /// The commune code a remapped event came with, when it is not one of the 3,321
    /// in effect since 2025-07-01 (`commune_code` is then absent).
    pub commune_code_original: Option<String>,
    pub body: Body,
}

/// The type-specific part of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    DossierReceived {
        dossier_id: String,
        procedure_code: String,
        channel: Channel,
        service_level: ServiceLevel,
        due_at: DateTime<Utc>,
        digitized: bool,
        reused_data: bool,
        authenticated: bool,
        /// Synchronised to the national public-service portal; optional (§7.5).
        synced_dvcqg: Option<bool>,
    },
    DossierResolved {
        dossier_id: String,
        procedure_code: String,
        due_at: DateTime<Utc>,
        result_electronic: bool,
    },
    DossierClosed {
        dossier_id: String,
        reason: CloseReason,
    },
    DossierPaid {
        dossier_id: String,
        amount_vnd: i64,
        online: bool,
    },
    DossierRated {
        dossier_id: String,
        satisfied: bool,
    },
    DocumentSent {
        document_id: String,
        receiver_agency_code: String,
        electronic: bool,
        signed: bool,
        secret: bool,
    },
    WorkRecordClosed {
        record_id: String,
        online: bool,
        secret: bool,
    },
    InspectionCompleted {
        inspection_id: String,
        digital: bool,
    },
    ReportSubmitted {
        report_id: String,
        via_system: bool,
    },
    FeedbackReceived {
        feedback_id: String,
        channel: FeedbackChannel,
        due_at: DateTime<Utc>,
    },
    FeedbackResolved {
        feedback_id: String,
        due_at: DateTime<Utc>,
        /// The citizen's rating of the handling; optional.
        satisfied: Option<bool>,
    },
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match &self.body {
            Body::DossierReceived { .. } => EventType::DossierReceived,
            Body::DossierResolved { .. } => EventType::DossierResolved,
            Body::DossierClosed { .. } => EventType::DossierClosed,
            Body::DossierPaid { .. } => EventType::DossierPaid,
            Body::DossierRated { .. } => EventType::DossierRated,
            Body::DocumentSent { .. } => EventType::DocumentSent,
            Body::WorkRecordClosed { .. } => EventType::WorkRecordClosed,
            Body::InspectionCompleted { .. } => EventType::InspectionCompleted,
            Body::ReportSubmitted { .. } => EventType::ReportSubmitted,
            Body::FeedbackReceived { .. } => EventType::FeedbackReceived,
            Body::FeedbackResolved { .. } => EventType::FeedbackResolved,
        }
    }

    pub fn family(&self) -> Family {
        self.event_type().family()
    }

    /// The id of the entity the event is about: the natural Kafka message key.
    pub fn entity_id(&self) -> &str {
        match &self.body {
            Body::DossierReceived { dossier_id, .. }
            | Body::DossierResolved { dossier_id, .. }
            | Body::DossierClosed { dossier_id, .. }
            | Body::DossierPaid { dossier_id, .. }
            | Body::DossierRated { dossier_id, .. } => dossier_id,
            Body::DocumentSent { document_id, .. } => document_id,
            Body::WorkRecordClosed { record_id, .. } => record_id,
            Body::InspectionCompleted { inspection_id, .. } => inspection_id,
            Body::ReportSubmitted { report_id, .. } => report_id,
            Body::FeedbackReceived { feedback_id, .. } | Body::FeedbackResolved { feedback_id, .. } => feedback_id,
        }
    }

    /// The event as contract JSON (the inverse of [`decode_event`]): a remapped event
    /// with the codes it came with.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let mut v = json!({
            "event_id": self.event_id,
            "type": self.event_type().as_str(),
            "occurred_at": ts(&self.occurred_at),
            "source": self.source,
            "agency_code": self.agency_code,
            "level": self.level.as_str(),
        });
        let m = v.as_object_mut().expect("object");
        if let Some(p) = self.province_code_original.as_ref().or(self.province_code.as_ref()) {
            m.insert("province_code".into(), json!(p));
        }
        if let Some(c) = self.commune_code_original.as_ref().or(self.commune_code.as_ref()) {
            m.insert("commune_code".into(), json!(c));
        }
        let body = match &self.body {
            Body::DossierReceived {
                dossier_id,
                procedure_code,
                channel,
                service_level,
                due_at,
                digitized,
                reused_data,
                authenticated,
                synced_dvcqg,
            } => {
                let mut b = json!({"dossier_id": dossier_id, "procedure_code": procedure_code,
                "channel": channel.as_str(), "service_level": service_level.as_str(),
                "due_at": ts(due_at), "digitized": digitized, "reused_data": reused_data,
                "authenticated": authenticated});
                if let Some(s) = synced_dvcqg {
                    b["synced_dvcqg"] = json!(s);
                }
                b
            }
            Body::DossierResolved { dossier_id, procedure_code, due_at, result_electronic } => {
                json!({"dossier_id": dossier_id, "procedure_code": procedure_code,
                "due_at": ts(due_at), "result_electronic": result_electronic})
            }
            Body::DossierClosed { dossier_id, reason } => {
                json!({"dossier_id": dossier_id, "reason": reason.as_str()})
            }
            Body::DossierPaid { dossier_id, amount_vnd, online } => {
                json!({"dossier_id": dossier_id, "amount_vnd": amount_vnd, "online": online})
            }
            Body::DossierRated { dossier_id, satisfied } => {
                json!({"dossier_id": dossier_id, "satisfied": satisfied})
            }
            Body::DocumentSent { document_id, receiver_agency_code, electronic, signed, secret } => {
                json!({"document_id": document_id, "receiver_agency_code": receiver_agency_code,
                "electronic": electronic, "signed": signed, "secret": secret})
            }
            Body::WorkRecordClosed { record_id, online, secret } => {
                json!({"record_id": record_id, "online": online, "secret": secret})
            }
            Body::InspectionCompleted { inspection_id, digital } => {
                json!({"inspection_id": inspection_id, "digital": digital})
            }
            Body::ReportSubmitted { report_id, via_system } => {
                json!({"report_id": report_id, "via_system": via_system})
            }
            Body::FeedbackReceived { feedback_id, channel, due_at } => {
                json!({"feedback_id": feedback_id, "channel": channel.as_str(), "due_at": ts(due_at)})
            }
            Body::FeedbackResolved { feedback_id, due_at, satisfied } => {
                let mut b = json!({"feedback_id": feedback_id, "due_at": ts(due_at)});
                if let Some(s) = satisfied {
                    b["satisfied"] = json!(s);
                }
                b
            }
        };
        if let serde_json::Value::Object(b) = body {
            m.extend(b);
        }
        v
    }
}
