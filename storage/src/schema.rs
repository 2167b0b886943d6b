//! Arrow schemas of the stored tables (CONTRACT.md §4) and the builders that turn
//! validated events into record batches.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
    new_null_array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use ioc_core::event::{Body, Event, Family};

/// The name of the dead-letter table.
pub const DEAD_LETTERS: &str = "dead_letters";

/// The name of the hourly KPI rollup table: counter deltas of ratio KPIs per KPI, UTC
/// hour and dimension tuple, written in the same commit as the events they count.
pub const KPI_HOURLY: &str = "kpi_hourly";

/// Timestamps are stored as microseconds in UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn envelope() -> Vec<Field> {
    vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("occurred_at", timestamp_type(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("agency_code", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, false),
        Field::new("province_code", DataType::Utf8, true),
        Field::new("commune_code", DataType::Utf8, true),
    ]
}

/// Envelope columns added after version 1 (CONTRACT.md §7.7), last in every event
/// table so that the columns of version 1 keep their positions: the codes a remapped
/// event came with, NULL when it was not remapped.
fn envelope_originals() -> Vec<Field> {
    vec![
        Field::new("province_code_original", DataType::Utf8, true),
        Field::new("commune_code_original", DataType::Utf8, true),
    ]
}

/// An event table: the envelope, the family's columns, then [`envelope_originals`].
fn with_envelope(extra: Vec<Field>) -> SchemaRef {
    let mut fields = envelope();
    fields.extend(extra);
    fields.extend(envelope_originals());
    Arc::new(Schema::new(fields))
}

static DOSSIER: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let b = |n: &str| Field::new(n, DataType::Boolean, true);
    with_envelope(vec![
        Field::new("dossier_id", DataType::Utf8, false),
        s("procedure_code"),
        s("channel"),
        s("service_level"),
        Field::new("due_at", timestamp_type(), true),
        b("digitized"),
        b("reused_data"),
        b("authenticated"),
        b("result_electronic"),
        s("reason"),
        Field::new("amount_vnd", DataType::Int64, true),
        b("online"),
        b("satisfied"),
        // Optional on `dossier.received` (CONTRACT.md §7.5).
        b("synced_dvcqg"),
    ])
});

static DOCUMENT: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_envelope(vec![
        Field::new("document_id", DataType::Utf8, false),
        Field::new("receiver_agency_code", DataType::Utf8, false),
        Field::new("electronic", DataType::Boolean, false),
        Field::new("signed", DataType::Boolean, false),
        Field::new("secret", DataType::Boolean, false),
    ])
});

static WORK_RECORD: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_envelope(vec![
        Field::new("record_id", DataType::Utf8, false),
        Field::new("online", DataType::Boolean, false),
        Field::new("secret", DataType::Boolean, false),
    ])
});

static OTHER: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_envelope(vec![
        Field::new("entity_id", DataType::Utf8, false),
        Field::new("digital", DataType::Boolean, true),
        Field::new("via_system", DataType::Boolean, true),
    ])
});

static FEEDBACK: LazyLock<SchemaRef> = LazyLock::new(|| {
    with_envelope(vec![
        Field::new("feedback_id", DataType::Utf8, false),
        // `feedback.received` only.
        Field::new("channel", DataType::Utf8, true),
        Field::new("due_at", timestamp_type(), false),
        // Optional on `feedback.resolved`.
        Field::new("satisfied", DataType::Boolean, true),
    ])
});

static DEAD: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("received_at", timestamp_type(), false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("raw", DataType::Binary, false),
    ]))
});

/// The schema of a family's table.
pub fn family_schema(family: Family) -> SchemaRef {
    match family {
        Family::Dossier => DOSSIER.clone(),
        Family::Document => DOCUMENT.clone(),
        Family::WorkRecord => WORK_RECORD.clone(),
        Family::Other => OTHER.clone(),
        Family::Feedback => FEEDBACK.clone(),
    }
}

static KPI_HOURLY_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let dim = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("kpi", DataType::Utf8, false),
        Field::new("hour", timestamp_type(), false),
        dim("province_code"),
        dim("commune_code"),
        dim("agency_code"),
        dim("level"),
        dim("source"),
        dim("procedure_code"),
        dim("channel"),
        Field::new("numerator", DataType::Int64, false),
        Field::new("denominator", DataType::Int64, false),
        Field::new("first_at", timestamp_type(), false),
        Field::new("last_at", timestamp_type(), false),
    ]))
});

pub fn dead_letter_schema() -> SchemaRef {
    DEAD.clone()
}

/// The schema of [`KPI_HOURLY`]: `kpi`, `hour` (the hour's start), the seven
/// dimensions, `numerator`, `denominator`, and `first_at`/`last_at`, the earliest and
/// latest `occurred_at` of the events a row counts.
pub fn kpi_hourly_schema() -> SchemaRef {
    KPI_HOURLY_SCHEMA.clone()
}

/// Every stored table: the four families, the dead letters and the KPI rollups.
pub fn tables() -> impl Iterator<Item = (&'static str, SchemaRef)> {
    Family::ALL
        .into_iter()
        .map(|f| (f.table(), family_schema(f)))
        .chain([(DEAD_LETTERS, dead_letter_schema()), (KPI_HOURLY, kpi_hourly_schema())])
}

pub fn schema_of(table: &str) -> Option<SchemaRef> {
    tables().find(|(t, _)| *t == table).map(|(_, s)| s)
}

/// `batch`, read from a file of a table, in the columns of `schema` (the table's
/// current schema, or a projection of it): schema evolution. Files written by an older
/// version lack the columns added since; they read as NULL, as SQL reads them
/// (DataFusion's listing fills a column missing from a file with NULL). A column whose
/// type differs is cast; columns the schema does not have are dropped. A missing
/// column that may not be NULL is an error: a table only ever gains nullable columns.
pub fn adapt_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type()),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), batch.num_rows())),
            None => {
                Err(ArrowError::SchemaError(format!("the file has no column `{}`, which may not be NULL", f.name())))
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// The timestamp column a table is partitioned (by Vietnam date) and sorted by.
pub fn time_column_of(table: &str) -> &'static str {
    match table {
        DEAD_LETTERS => "received_at",
        KPI_HOURLY => "hour",
        _ => "occurred_at",
    }
}

/// Builds one family's record batch from validated events.
pub struct FamilyBuilder {
    family: Family,
    event_id: StringBuilder,
    event_type: StringBuilder,
    occurred_at: TimestampMicrosecondBuilder,
    source: StringBuilder,
    agency_code: StringBuilder,
    level: StringBuilder,
    province_code: StringBuilder,
    commune_code: StringBuilder,
    province_code_original: StringBuilder,
    commune_code_original: StringBuilder,
    strings: Vec<StringBuilder>,
    bools: Vec<BooleanBuilder>,
    timestamps: Vec<TimestampMicrosecondBuilder>,
    ints: Vec<Int64Builder>,
    len: usize,
}

/// Column kinds in family order, after the envelope. Indexes into the builder vectors.
enum Col {
    S(usize),
    B(usize),
    T(usize),
    I(usize),
}

fn layout(family: Family) -> &'static [Col] {
    use Col::*;
    match family {
        // dossier_id, procedure_code, channel, service_level, due_at, digitized, reused_data,
        // authenticated, result_electronic, reason, amount_vnd, online, satisfied, synced_dvcqg
        Family::Dossier => &[S(0), S(1), S(2), S(3), T(0), B(0), B(1), B(2), B(3), S(4), I(0), B(4), B(5), B(6)],
        // document_id, receiver_agency_code, electronic, signed, secret
        Family::Document => &[S(0), S(1), B(0), B(1), B(2)],
        // record_id, online, secret
        Family::WorkRecord => &[S(0), B(0), B(1)],
        // entity_id, digital, via_system
        Family::Other => &[S(0), B(0), B(1)],
        // feedback_id, channel, due_at, satisfied
        Family::Feedback => &[S(0), S(1), T(0), B(0)],
    }
}

impl FamilyBuilder {
    pub fn new(family: Family) -> Self {
        let cols = layout(family);
        let count = |f: fn(&Col) -> bool| cols.iter().filter(|c| f(c)).count();
        Self {
            family,
            event_id: StringBuilder::new(),
            event_type: StringBuilder::new(),
            occurred_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            source: StringBuilder::new(),
            agency_code: StringBuilder::new(),
            level: StringBuilder::new(),
            province_code: StringBuilder::new(),
            commune_code: StringBuilder::new(),
            province_code_original: StringBuilder::new(),
            commune_code_original: StringBuilder::new(),
            strings: (0..count(|c| matches!(c, Col::S(_)))).map(|_| StringBuilder::new()).collect(),
            bools: (0..count(|c| matches!(c, Col::B(_)))).map(|_| BooleanBuilder::new()).collect(),
            timestamps: (0..count(|c| matches!(c, Col::T(_))))
                .map(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                .collect(),
            ints: (0..count(|c| matches!(c, Col::I(_)))).map(|_| Int64Builder::new()).collect(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends an event; it must belong to this builder's family.
    pub fn append(&mut self, e: &Event) {
        debug_assert_eq!(e.family(), self.family);
        self.event_id.append_value(&e.event_id);
        self.event_type.append_value(e.event_type().as_str());
        self.occurred_at.append_value(e.occurred_at.timestamp_micros());
        self.source.append_value(&e.source);
        self.agency_code.append_value(&e.agency_code);
        self.level.append_value(e.level.as_str());
        self.province_code.append_option(e.province_code.as_deref());
        self.commune_code.append_option(e.commune_code.as_deref());
        self.province_code_original.append_option(e.province_code_original.as_deref());
        self.commune_code_original.append_option(e.commune_code_original.as_deref());
        let ts = |t: &DateTime<Utc>| Some(t.timestamp_micros());
        let (s, b, t, i) = (&mut self.strings, &mut self.bools, &mut self.timestamps, &mut self.ints);
        match &e.body {
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
                dossier_row(
                    s,
                    b,
                    t,
                    i,
                    DossierRow {
                        dossier_id,
                        procedure_code: Some(procedure_code),
                        channel: Some(channel.as_str()),
                        service_level: Some(service_level.as_str()),
                        due_at: ts(due_at),
                        digitized: Some(*digitized),
                        reused_data: Some(*reused_data),
                        authenticated: Some(*authenticated),
                        synced_dvcqg: *synced_dvcqg,
                        ..Default::default()
                    },
                );
            }
            Body::DossierResolved { dossier_id, procedure_code, due_at, result_electronic } => dossier_row(
                s,
                b,
                t,
                i,
                DossierRow {
                    dossier_id,
                    procedure_code: Some(procedure_code),
                    due_at: ts(due_at),
                    result_electronic: Some(*result_electronic),
                    ..Default::default()
                },
            ),
            Body::DossierClosed { dossier_id, reason } => {
                dossier_row(s, b, t, i, DossierRow { dossier_id, reason: Some(reason.as_str()), ..Default::default() })
            }
            Body::DossierPaid { dossier_id, amount_vnd, online } => dossier_row(
                s,
                b,
                t,
                i,
                DossierRow { dossier_id, amount_vnd: Some(*amount_vnd), online: Some(*online), ..Default::default() },
            ),
            Body::DossierRated { dossier_id, satisfied } => {
                dossier_row(s, b, t, i, DossierRow { dossier_id, satisfied: Some(*satisfied), ..Default::default() })
            }
            Body::DocumentSent { document_id, receiver_agency_code, electronic, signed, secret } => {
                s[0].append_value(document_id);
                s[1].append_value(receiver_agency_code);
                b[0].append_value(*electronic);
                b[1].append_value(*signed);
                b[2].append_value(*secret);
            }
            Body::WorkRecordClosed { record_id, online, secret } => {
                s[0].append_value(record_id);
                b[0].append_value(*online);
                b[1].append_value(*secret);
            }
            Body::InspectionCompleted { inspection_id, digital } => {
                s[0].append_value(inspection_id);
                b[0].append_value(*digital);
                b[1].append_null();
            }
            Body::ReportSubmitted { report_id, via_system } => {
                s[0].append_value(report_id);
                b[0].append_null();
                b[1].append_value(*via_system);
            }
            Body::FeedbackReceived { feedback_id, channel, due_at } => {
                s[0].append_value(feedback_id);
                s[1].append_value(channel.as_str());
                t[0].append_value(due_at.timestamp_micros());
                b[0].append_null();
            }
            Body::FeedbackResolved { feedback_id, due_at, satisfied } => {
                s[0].append_value(feedback_id);
                s[1].append_null();
                t[0].append_value(due_at.timestamp_micros());
                b[0].append_option(*satisfied);
            }
        }
        self.len += 1;
    }

    /// Finishes the batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.occurred_at.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.agency_code.finish()),
            Arc::new(self.level.finish()),
            Arc::new(self.province_code.finish()),
            Arc::new(self.commune_code.finish()),
        ];
        for col in layout(self.family) {
            columns.push(match col {
                Col::S(k) => Arc::new(self.strings[*k].finish()),
                Col::B(k) => Arc::new(self.bools[*k].finish()),
                Col::T(k) => Arc::new(self.timestamps[*k].finish()),
                Col::I(k) => Arc::new(self.ints[*k].finish()),
            });
        }
        columns.push(Arc::new(self.province_code_original.finish()));
        columns.push(Arc::new(self.commune_code_original.finish()));
        self.len = 0;
        RecordBatch::try_new(family_schema(self.family), columns).expect("builder matches schema")
    }
}

#[derive(Default)]
struct DossierRow<'a> {
    dossier_id: &'a str,
    procedure_code: Option<&'a str>,
    channel: Option<&'a str>,
    service_level: Option<&'a str>,
    due_at: Option<i64>,
    digitized: Option<bool>,
    reused_data: Option<bool>,
    authenticated: Option<bool>,
    result_electronic: Option<bool>,
    reason: Option<&'a str>,
    amount_vnd: Option<i64>,
    online: Option<bool>,
    satisfied: Option<bool>,
    synced_dvcqg: Option<bool>,
}

fn dossier_row(
    s: &mut [StringBuilder],
    b: &mut [BooleanBuilder],
    t: &mut [TimestampMicrosecondBuilder],
    i: &mut [Int64Builder],
    r: DossierRow<'_>,
) {
    s[0].append_value(r.dossier_id);
    s[1].append_option(r.procedure_code);
    s[2].append_option(r.channel);
    s[3].append_option(r.service_level);
    t[0].append_option(r.due_at);
    b[0].append_option(r.digitized);
    b[1].append_option(r.reused_data);
    b[2].append_option(r.authenticated);
    b[3].append_option(r.result_electronic);
    s[4].append_option(r.reason);
    i[0].append_option(r.amount_vnd);
    b[4].append_option(r.online);
    b[5].append_option(r.satisfied);
    b[6].append_option(r.synced_dvcqg);
}

/// A rejected record on its way to the dead-letter table.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub received_at: DateTime<Utc>,
    /// Where it came from: `http:<request>#<index>`, `kafka:<topic>/<partition>@<offset>`, ...
    pub origin: String,
    pub error: String,
    pub raw: Vec<u8>,
}

pub fn dead_letter_batch(letters: &[DeadLetter]) -> RecordBatch {
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut origin = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut raw = BinaryBuilder::new();
    for l in letters {
        at.append_value(l.received_at.timestamp_micros());
        origin.append_value(&l.origin);
        error.append_value(&l.error);
        raw.append_value(&l.raw);
    }
    RecordBatch::try_new(
        dead_letter_schema(),
        vec![Arc::new(at.finish()), Arc::new(origin.finish()), Arc::new(error.finish()), Arc::new(raw.finish())],
    )
    .expect("dead letters match schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ioc_core::{AdminUnits, decode_event};

    #[test]
    fn every_family_builds_a_batch_with_its_contract_columns() {
        let units = AdminUnits::builtin();
        let now = Utc::now();
        let raw = |ty: &str, extra: &str| {
            format!(
                r#"{{"event_id":"{ty}","type":"{ty}","occurred_at":"2026-01-01T00:00:00Z","source":"s",
                "agency_code":"a","level":"province","province_code":"01",{extra}}}"#
            )
        };
        let events = [
            raw("dossier.paid", r#""dossier_id":"D","amount_vnd":5,"online":true"#),
            raw(
                "document.sent",
                r#""document_id":"V","receiver_agency_code":"r","electronic":true,"signed":false,"secret":false"#,
            ),
            raw("work_record.closed", r#""record_id":"R","online":false,"secret":true"#),
            raw("report.submitted", r#""report_id":"B","via_system":true"#),
            raw("feedback.received", r#""feedback_id":"F","channel":"phone","due_at":"2026-01-05T00:00:00Z""#),
            raw("feedback.resolved", r#""feedback_id":"F","due_at":"2026-01-05T00:00:00Z""#),
        ];
        for text in events {
            let e = decode_event(text.as_bytes(), &units, now).unwrap();
            let mut b = FamilyBuilder::new(e.family());
            b.append(&e);
            let batch = b.finish();
            assert_eq!(batch.num_rows(), 1);
            assert_eq!(batch.schema(), family_schema(e.family()));
            assert!(b.is_empty());
        }
        let names: Vec<String> = family_schema(Family::Dossier).fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names,
            [
                "event_id",
                "type",
                "occurred_at",
                "source",
                "agency_code",
                "level",
                "province_code",
                "commune_code",
                "dossier_id",
                "procedure_code",
                "channel",
                "service_level",
                "due_at",
                "digitized",
                "reused_data",
                "authenticated",
                "result_electronic",
                "reason",
                "amount_vnd",
                "online",
                "satisfied",
                "synced_dvcqg",
                "province_code_original",
                "commune_code_original"
            ]
        );
    }

    #[test]
    fn feedback_events_have_their_contract_columns_and_absent_optional_fields_are_null() {
        use arrow::array::{Array, AsArray};
        let names: Vec<String> = family_schema(Family::Feedback).fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names,
            [
                "event_id",
                "type",
                "occurred_at",
                "source",
                "agency_code",
                "level",
                "province_code",
                "commune_code",
                "feedback_id",
                "channel",
                "due_at",
                "satisfied",
                "province_code_original",
                "commune_code_original"
            ]
        );
        let units = AdminUnits::builtin();
        let now = Utc::now();
        let event = |ty: &str, extra: &str| {
            let text = format!(
                r#"{{"event_id":"{ty}","type":"{ty}","occurred_at":"2026-01-01T00:00:00Z","source":"s",
                "agency_code":"a","level":"province","province_code":"01"{extra}}}"#
            );
            decode_event(text.as_bytes(), &units, now).unwrap()
        };
        let bools = |batch: &RecordBatch, name: &str| -> Vec<Option<bool>> {
            batch.column_by_name(name).unwrap().as_boolean().iter().collect()
        };
        let mut b = FamilyBuilder::new(Family::Feedback);
        b.append(&event(
            "feedback.received",
            r#","feedback_id":"F","channel":"phone","due_at":"2026-01-05T00:00:00Z""#,
        ));
        b.append(&event("feedback.resolved", r#","feedback_id":"F","due_at":"2026-01-05T00:00:00Z""#));
        b.append(&event(
            "feedback.resolved",
            r#","feedback_id":"G","due_at":"2026-01-05T00:00:00Z","satisfied":false"#,
        ));
        let batch = b.finish();
        assert_eq!(bools(&batch, "satisfied"), [None, None, Some(false)]);
        let channel: Vec<Option<&str>> = batch.column_by_name("channel").unwrap().as_string::<i32>().iter().collect();
        assert_eq!(channel, [Some("phone"), None, None]);
        assert_eq!(batch.column_by_name("province_code_original").unwrap().null_count(), 3);

        let received = r#","dossier_id":"D","procedure_code":"1","channel":"post","service_level":"none",
            "due_at":"2026-01-05T00:00:00Z","digitized":true,"reused_data":true,"authenticated":false"#;
        let mut b = FamilyBuilder::new(Family::Dossier);
        b.append(&event("dossier.received", received));
        b.append(&event("dossier.received", &format!(r#"{received},"synced_dvcqg":true"#)));
        b.append(&event("dossier.received", &format!(r#"{received},"synced_dvcqg":false"#)));
        b.append(&event("dossier.rated", r#","dossier_id":"D","satisfied":true"#));
        assert_eq!(bools(&b.finish(), "synced_dvcqg"), [None, Some(true), Some(false), None]);
    }
}
