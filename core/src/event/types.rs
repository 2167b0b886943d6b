//! The event types of the contract, the storage families they belong to, and the
//! enumerations that event fields take.

use std::fmt;

/// The event types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    DossierReceived,
    DossierResolved,
    DossierClosed,
    DossierPaid,
    DossierRated,
    DocumentSent,
    WorkRecordClosed,
    InspectionCompleted,
    ReportSubmitted,
    FeedbackReceived,
    FeedbackResolved,
}

impl EventType {
    pub const ALL: [EventType; 11] = [
        EventType::DossierReceived,
        EventType::DossierResolved,
        EventType::DossierClosed,
        EventType::DossierPaid,
        EventType::DossierRated,
        EventType::DocumentSent,
        EventType::WorkRecordClosed,
        EventType::InspectionCompleted,
        EventType::ReportSubmitted,
        EventType::FeedbackReceived,
        EventType::FeedbackResolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::DossierReceived => "dossier.received",
            EventType::DossierResolved => "dossier.resolved",
            EventType::DossierClosed => "dossier.closed",
            EventType::DossierPaid => "dossier.paid",
            EventType::DossierRated => "dossier.rated",
            EventType::DocumentSent => "document.sent",
            EventType::WorkRecordClosed => "work_record.closed",
            EventType::InspectionCompleted => "inspection.completed",
            EventType::ReportSubmitted => "report.submitted",
            EventType::FeedbackReceived => "feedback.received",
            EventType::FeedbackResolved => "feedback.resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The storage family (SQL table) this type belongs to.
    pub fn family(self) -> Family {
        match self {
            EventType::DossierReceived
            | EventType::DossierResolved
            | EventType::DossierClosed
            | EventType::DossierPaid
            | EventType::DossierRated => Family::Dossier,
            EventType::DocumentSent => Family::Document,
            EventType::WorkRecordClosed => Family::WorkRecord,
            EventType::InspectionCompleted | EventType::ReportSubmitted => Family::Other,
            EventType::FeedbackReceived | EventType::FeedbackResolved => Family::Feedback,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group of event types stored in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Dossier,
    Document,
    WorkRecord,
    Other,
    /// Citizen feedback (phản ánh, kiến nghị; CONTRACT.md §7.5).
    Feedback,
}

impl Family {
    pub const ALL: [Family; 5] =
        [Family::Dossier, Family::Document, Family::WorkRecord, Family::Other, Family::Feedback];

    /// The SQL table name of the family.
    pub fn table(self) -> &'static str {
        match self {
            Family::Dossier => "dossier_events",
            Family::Document => "document_events",
            Family::WorkRecord => "work_record_events",
            Family::Other => "other_events",
            Family::Feedback => "feedback_events",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Central,
    Province,
    Commune,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Central => "central",
            Level::Province => "province",
            Level::Commune => "commune",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Online,
    InPerson,
    Post,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Online => "online",
            Channel::InPerson => "in_person",
            Channel::Post => "post",
        }
    }
}

/// How citizen feedback reached the agency (`feedback.received`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedbackChannel {
    Online,
    InPerson,
    Phone,
    Post,
}

impl FeedbackChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackChannel::Online => "online",
            FeedbackChannel::InPerson => "in_person",
            FeedbackChannel::Phone => "phone",
            FeedbackChannel::Post => "post",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceLevel {
    Full,
    Partial,
    None,
}

impl ServiceLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceLevel::Full => "full",
            ServiceLevel::Partial => "partial",
            ServiceLevel::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    Refused,
    Withdrawn,
    Stopped,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Refused => "refused",
            CloseReason::Withdrawn => "withdrawn",
            CloseReason::Stopped => "stopped",
        }
    }
}

/// What to do with an event whose `province_code` is one of the 63 codes in use before
/// 2025-07-01 and no longer in effect (CONTRACT.md §7.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LegacyProvinceCodes {
    /// Reject it to the dead letters, as any unknown code.
    #[default]
    Reject,
    /// Store it under the province that holds that code since, keeping the code it came
    /// with in `province_code_original` (and an unknown commune in
    /// `commune_code_original`).
    Remap,
}

impl LegacyProvinceCodes {
    pub fn as_str(self) -> &'static str {
        match self {
            LegacyProvinceCodes::Reject => "reject",
            LegacyProvinceCodes::Remap => "remap",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [LegacyProvinceCodes::Reject, LegacyProvinceCodes::Remap].into_iter().find(|m| m.as_str() == s)
    }
}
