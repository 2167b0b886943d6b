//! The wire shape of an event, as one pass of the JSON decoder leaves it.

use std::borrow::Cow;

use serde::Deserialize;

/// The wire shape: every field optional, so that we can name what is missing.
/// Strings borrow from the input where JSON escapes allow it.
#[derive(Deserialize)]
pub(super) struct Raw<'a> {
    #[serde(borrow)]
    pub(super) event_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    pub(super) event_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) occurred_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) agency_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) level: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) province_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) commune_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) dossier_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) procedure_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) service_level: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) due_at: Option<Cow<'a, str>>,
    pub(super) digitized: Option<bool>,
    pub(super) reused_data: Option<bool>,
    pub(super) authenticated: Option<bool>,
    pub(super) result_electronic: Option<bool>,
    #[serde(borrow)]
    pub(super) reason: Option<Cow<'a, str>>,
    pub(super) amount_vnd: Option<i64>,
    pub(super) online: Option<bool>,
    pub(super) satisfied: Option<bool>,
    #[serde(borrow)]
    pub(super) document_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) receiver_agency_code: Option<Cow<'a, str>>,
    pub(super) electronic: Option<bool>,
    pub(super) signed: Option<bool>,
    pub(super) secret: Option<bool>,
    #[serde(borrow)]
    pub(super) record_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) inspection_id: Option<Cow<'a, str>>,
    pub(super) digital: Option<bool>,
    #[serde(borrow)]
    pub(super) report_id: Option<Cow<'a, str>>,
    pub(super) via_system: Option<bool>,
}
