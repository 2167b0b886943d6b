//! A seeded simulator of realistic events across the 34 provinces and their communes.
//!
//! Each province has its own profile (how often dossiers are submitted online,
//! digitized, resolved late, ...), drawn from the seed, so that some provinces sit
//! below target on some KPIs, as in real life. The same seed and the same clock give
//! the same events: the caller passes the event time in.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ioc_core::AdminUnits;
use ioc_core::event::{Body, Channel, CloseReason, Event, FeedbackChannel, Level, ServiceLevel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Procedure codes from the national procedure database used by the simulator.
const PROCEDURES: &[(&str, ServiceLevel)] = &[
    ("1.001612", ServiceLevel::Full),
    ("1.000894", ServiceLevel::Full),
    ("2.000889", ServiceLevel::Full),
    ("1.001193", ServiceLevel::Full),
    ("1.004227", ServiceLevel::Partial),
    ("2.001711", ServiceLevel::Partial),
    ("1.003583", ServiceLevel::Partial),
    ("1.010736", ServiceLevel::None),
    ("2.002154", ServiceLevel::Full),
    ("1.008899", ServiceLevel::None),
];

const SOURCES: &[&str] = &["motcua", "dvc-quocgia", "vdxp", "hethong-baocao"];

#[derive(Debug, Clone)]
struct Profile {
    online: f64,
    digitized: f64,
    reused: f64,
    authenticated: f64,
    late: f64,
    e_result: f64,
    pay_online: f64,
    satisfied: f64,
    edoc: f64,
    signed: f64,
    work_online: f64,
    digital_inspection: f64,
    report_via_system: f64,
    /// Whether the province's one-stop system reports `synced_dvcqg` at all, and if so
    /// how often the dossier is synchronised to the national portal.
    reports_dvcqg: bool,
    dvcqg_synced: f64,
    feedback_late: f64,
    feedback_satisfied: f64,
    weight: f64,
}

struct OpenFeedback {
    feedback_id: String,
    province: usize,
    commune: Option<String>,
    due_at: DateTime<Utc>,
}

struct Open {
    dossier_id: String,
    province: usize,
    commune: Option<String>,
    procedure: usize,
    due_at: DateTime<Utc>,
}

pub struct Simulator {
    rng: ChaCha8Rng,
    units: Arc<AdminUnits>,
    profiles: Vec<Profile>,
    cumulative: Vec<f64>,
    seed: u64,
    seq: u64,
    open: VecDeque<Open>,
    open_feedback: VecDeque<OpenFeedback>,
}

const MAX_OPEN: usize = 20_000;
const MAX_OPEN_FEEDBACK: usize = 2_000;

impl Simulator {
    pub fn new(units: Arc<AdminUnits>, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut r = |lo: f64, hi: f64| rng.random_range(lo..hi);
        let profiles: Vec<Profile> = units
            .provinces()
            .iter()
            .map(|_| Profile {
                online: r(0.35, 0.95),
                digitized: r(0.55, 0.98),
                reused: r(0.30, 0.80),
                authenticated: r(0.85, 1.0),
                late: r(0.0, 0.12),
                e_result: r(0.80, 1.0),
                pay_online: r(0.40, 0.90),
                satisfied: r(0.82, 0.99),
                edoc: r(0.80, 0.99),
                signed: r(0.90, 1.0),
                work_online: r(0.75, 0.99),
                digital_inspection: r(0.30, 0.80),
                report_via_system: r(0.85, 1.0),
                // Most provinces' systems send the flag; a few older ones never do.
                reports_dvcqg: r(0.0, 1.0) < 0.85,
                dvcqg_synced: r(0.80, 0.99),
                feedback_late: r(0.02, 0.20),
                feedback_satisfied: r(0.70, 0.97),
                weight: r(0.5, 3.0),
            })
            .collect();
        let mut acc = 0.0;
        let cumulative = profiles
            .iter()
            .map(|p| {
                acc += p.weight;
                acc
            })
            .collect();
        Self { rng, units, profiles, cumulative, seed, seq: 0, open: VecDeque::new(), open_feedback: VecDeque::new() }
    }

    fn province(&mut self) -> usize {
        let total = *self.cumulative.last().expect("provinces");
        let x = self.rng.random_range(0.0..total);
        self.cumulative.partition_point(|c| *c <= x).min(self.profiles.len() - 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    fn commune(&mut self, province: usize) -> Option<String> {
        let code = &self.units.provinces()[province].code;
        let communes: Vec<&str> = self.units.communes_of(code).map(|c| c.commune_code.as_str()).collect();
        if communes.is_empty() { None } else { Some(communes[self.rng.random_range(0..communes.len())].to_string()) }
    }

    fn envelope(
        &mut self,
        at: DateTime<Utc>,
        province: usize,
        commune: Option<String>,
        source: &str,
        body: Body,
    ) -> Event {
        self.seq += 1;
        let p = &self.units.provinces()[province];
        let (level, agency_code) = match &commune {
            Some(c) => (Level::Commune, format!("000.{}.{}.H{}", &c[..2], &c[2..], p.code)),
            None => (Level::Province, format!("000.00.00.H{}", p.code)),
        };
        Event {
            event_id: format!("sim-{:x}-{}", self.seed, self.seq),
            occurred_at: at,
            source: format!("{source}-{}", p.code),
            agency_code,
            level,
            province_code: Some(p.code.clone()),
            commune_code: commune,
            province_code_original: None,
            commune_code_original: None,
            body,
        }
    }

    /// The next citizen feedback event (`feedback.received` or `feedback.resolved`),
    /// occurring at `at`: what [`Simulator::next_event`] makes 2% of the time.
    pub fn next_feedback(&mut self, at: DateTime<Utc>) -> Event {
        let province = self.province();
        self.feedback(at, province)
    }

    /// Feedback is received slightly more often than resolved, so that a little stays
    /// open; most is resolved on time (the legal limit is days to weeks), and about two
    /// resolutions in three carry the citizen's rating.
    fn feedback(&mut self, at: DateTime<Utc>, province: usize) -> Event {
        if self.open_feedback.is_empty() || self.chance(0.53) {
            let commune = if self.chance(0.6) { self.commune(province) } else { None };
            let channel =
                [FeedbackChannel::Online, FeedbackChannel::InPerson, FeedbackChannel::Phone, FeedbackChannel::Post]
                    [self.weighted(&[0.55, 0.2, 0.2, 0.05])];
            let due_at = at + Duration::days(self.rng.random_range(5..31));
            let feedback_id = format!("PAKN-{}-{:x}-{}", self.units.provinces()[province].code, self.seed, self.seq);
            if self.open_feedback.len() >= MAX_OPEN_FEEDBACK {
                self.open_feedback.pop_front();
            }
            self.open_feedback.push_back(OpenFeedback {
                feedback_id: feedback_id.clone(),
                province,
                commune: commune.clone(),
                due_at,
            });
            return self.envelope(
                at,
                province,
                commune,
                "pakn",
                Body::FeedbackReceived { feedback_id, channel, due_at },
            );
        }
        let i = self.rng.random_range(0..self.open_feedback.len());
        let f = self.open_feedback.swap_remove_back(i).expect("non-empty");
        let p = self.profiles[f.province].clone();
        // A late resolution: the effective due time had passed.
        let due_at = if self.chance(p.feedback_late) {
            at - Duration::hours(self.rng.random_range(1..240))
        } else {
            f.due_at.max(at)
        };
        let satisfied = self.chance(0.65).then(|| self.chance(p.feedback_satisfied));
        let body = Body::FeedbackResolved { feedback_id: f.feedback_id, due_at, satisfied };
        self.envelope(at, f.province, f.commune, "pakn", body)
    }

    /// An index drawn with the given weights (summing to 1).
    fn weighted(&mut self, weights: &[f64]) -> usize {
        let mut x: f64 = self.rng.random();
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// The next event, occurring at `at`.
    pub fn next_event(&mut self, at: DateTime<Utc>) -> Event {
        let roll: f64 = self.rng.random();
        let province = self.province();
        let p = self.profiles[province].clone();
        match roll {
            // Receipts slightly outnumber finishes (35% vs 33% of events): the pool of
            // open dossiers fills up, and the oldest ones are then dropped unfinished,
            // about one dossier in eighteen, as abandoned dossiers are in practice.
            x if x < 0.35 || (x < 0.68 && self.open.is_empty()) => {
                let commune = if self.chance(0.8) { self.commune(province) } else { None };
                let procedure = self.rng.random_range(0..PROCEDURES.len());
                let service_level = PROCEDURES[procedure].1;
                let online = self.chance(if service_level == ServiceLevel::None { 0.05 } else { p.online });
                let channel = if online {
                    Channel::Online
                } else if self.chance(0.9) {
                    Channel::InPerson
                } else {
                    Channel::Post
                };
                // Most dossiers are due in days; a few are due in minutes, so that the
                // overdue gauge moves during a demo.
                let due_at = if self.chance(0.03) {
                    at + Duration::minutes(self.rng.random_range(1..10))
                } else {
                    at + Duration::days(self.rng.random_range(1..15))
                };
                let dossier_id = format!("HS-{}-{:x}-{}", self.units.provinces()[province].code, self.seed, self.seq);
                if self.open.len() >= MAX_OPEN {
                    self.open.pop_front();
                }
                self.open.push_back(Open {
                    dossier_id: dossier_id.clone(),
                    province,
                    commune: commune.clone(),
                    procedure,
                    due_at,
                });
                // A system that reports the flag leaves it out now and then (a dossier
                // not yet sent to the portal's queue).
                let synced_dvcqg = (p.reports_dvcqg && self.chance(0.97)).then(|| self.chance(p.dvcqg_synced));
                let body = Body::DossierReceived {
                    dossier_id,
                    procedure_code: PROCEDURES[procedure].0.into(),
                    channel,
                    service_level,
                    due_at,
                    digitized: self.chance(p.digitized),
                    reused_data: self.chance(p.reused),
                    authenticated: online && self.chance(p.authenticated),
                    synced_dvcqg,
                };
                self.envelope(at, province, commune, "motcua", body)
            }
            x if x < 0.68 => {
                let i = self.rng.random_range(0..self.open.len());
                let d = self.open.swap_remove_back(i).expect("non-empty");
                let p = self.profiles[d.province].clone();
                let next = self.rng.random_range(0.0..1.0);
                let body = if next < 0.05 {
                    let reason = [CloseReason::Refused, CloseReason::Withdrawn, CloseReason::Stopped]
                        [self.rng.random_range(0..3)];
                    Body::DossierClosed { dossier_id: d.dossier_id, reason }
                } else {
                    // A late resolution: the effective due time had passed.
                    let due_at = if self.chance(p.late) {
                        at - Duration::hours(self.rng.random_range(1..72))
                    } else {
                        d.due_at.max(at)
                    };
                    Body::DossierResolved {
                        dossier_id: d.dossier_id,
                        procedure_code: PROCEDURES[d.procedure].0.into(),
                        due_at,
                        result_electronic: self.chance(p.e_result),
                    }
                };
                self.envelope(at, d.province, d.commune, "motcua", body)
            }
            x if x < 0.78 => {
                let dossier_id = format!("HS-{}-{:x}-p{}", self.units.provinces()[province].code, self.seed, self.seq);
                let body = Body::DossierPaid {
                    dossier_id,
                    amount_vnd: self.rng.random_range(1..200) * 10_000,
                    online: self.chance(p.pay_online),
                };
                self.envelope(at, province, None, "dvc-quocgia", body)
            }
            x if x < 0.84 => {
                let dossier_id = format!("HS-{}-{:x}-r{}", self.units.provinces()[province].code, self.seed, self.seq);
                let body = Body::DossierRated { dossier_id, satisfied: self.chance(p.satisfied) };
                self.envelope(at, province, None, "dvc-quocgia", body)
            }
            x if x < 0.93 => {
                let electronic = self.chance(p.edoc);
                let receiver = self.province();
                let body = Body::DocumentSent {
                    document_id: format!("VB-{:x}-{}", self.seed, self.seq),
                    receiver_agency_code: format!("000.00.00.H{}", self.units.provinces()[receiver].code),
                    electronic,
                    signed: electronic && self.chance(p.signed),
                    secret: self.chance(0.02),
                };
                self.envelope(at, province, None, SOURCES[2], body)
            }
            x if x < 0.96 => {
                let body = Body::WorkRecordClosed {
                    record_id: format!("HSCV-{:x}-{}", self.seed, self.seq),
                    online: self.chance(p.work_online),
                    secret: self.chance(0.03),
                };
                self.envelope(at, province, None, "qlvb", body)
            }
            // Citizen feedback: rarer than dossiers (2% of events).
            x if x < 0.98 => self.feedback(at, province),
            x if x < 0.99 => {
                let body = Body::InspectionCompleted {
                    inspection_id: format!("KT-{:x}-{}", self.seed, self.seq),
                    digital: self.chance(p.digital_inspection),
                };
                self.envelope(at, province, None, "thanhtra", body)
            }
            _ => {
                let body = Body::ReportSubmitted {
                    report_id: format!("BC-{:x}-{}", self.seed, self.seq),
                    via_system: self.chance(p.report_via_system),
                };
                self.envelope(at, province, None, SOURCES[3], body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_clock_give_the_same_events() {
        let units = Arc::new(AdminUnits::builtin());
        let at: DateTime<Utc> = "2026-11-23T03:00:00Z".parse().unwrap();
        let run = |seed| {
            let mut s = Simulator::new(units.clone(), seed);
            (0..500).map(|i| s.next_event(at + Duration::seconds(i)).to_json()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn simulated_events_are_valid_and_cover_every_type() {
        let units = Arc::new(AdminUnits::builtin());
        let at: DateTime<Utc> = "2026-11-23T03:00:00Z".parse().unwrap();
        let mut s = Simulator::new(units.clone(), 1);
        let mut types = std::collections::BTreeSet::new();
        let mut provinces = std::collections::BTreeSet::new();
        for _ in 0..5_000 {
            let e = s.next_event(at);
            let raw = e.to_json().to_string();
            let back = ioc_core::decode_event(raw.as_bytes(), &units, at).unwrap_or_else(|err| panic!("{raw}: {err}"));
            assert_eq!(back, e);
            types.insert(e.event_type());
            provinces.insert(e.province_code.clone().unwrap());
        }
        assert_eq!(types.len(), 11, "{types:?}");
        assert_eq!(provinces.len(), 34);
    }

    #[test]
    fn feedback_and_the_portal_flag_come_in_realistic_proportions() {
        let units = Arc::new(AdminUnits::builtin());
        let at: DateTime<Utc> = "2026-11-23T03:00:00Z".parse().unwrap();
        let mut s = Simulator::new(units, 2);
        let n = 100_000;
        let (mut received, mut flagged, mut synced) = (0u32, 0u32, 0u32);
        let (mut fb_received, mut fb_resolved, mut on_time, mut rated) = (0u32, 0u32, 0u32, 0u32);
        let mut silent: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut reporting: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for i in 0..n {
            let e = s.next_event(at + Duration::seconds(i));
            assert_eq!((&e.province_code_original, &e.commune_code_original), (&None, &None), "only codes in effect");
            let province = e.province_code.clone().unwrap();
            match e.body {
                Body::DossierReceived { synced_dvcqg, .. } => {
                    received += 1;
                    if let Some(v) = synced_dvcqg {
                        flagged += 1;
                        synced += u32::from(v);
                        reporting.insert(province);
                    } else {
                        silent.insert(province);
                    }
                }
                Body::FeedbackReceived { .. } => fb_received += 1,
                Body::FeedbackResolved { due_at, satisfied, .. } => {
                    fb_resolved += 1;
                    on_time += u32::from(e.occurred_at <= due_at);
                    rated += u32::from(satisfied.is_some());
                }
                _ => {}
            }
        }
        let share = |a: u32, b: u32| f64::from(a) / f64::from(b);
        // Feedback is rarer than dossiers; most of it is resolved, mostly on time, and
        // about two resolutions in three are rated.
        let feedback = share(fb_received + fb_resolved, n as u32);
        assert!((0.015..0.025).contains(&feedback), "feedback is {feedback} of events");
        assert!(share(fb_resolved, fb_received) > 0.8, "{fb_resolved} of {fb_received} resolved");
        assert!(share(on_time, fb_resolved) > 0.8, "{on_time} of {fb_resolved} on time");
        assert!((0.6..0.7).contains(&share(rated, fb_resolved)), "{rated} of {fb_resolved} rated");
        assert!(share(received, n as u32) > 10.0 * feedback);
        // Most dossiers carry the flag, most of those are synchronised, and some
        // provinces' systems never send it.
        assert!((0.6..0.99).contains(&share(flagged, received)), "{flagged} of {received} flagged");
        assert!(share(synced, flagged) > 0.8, "{synced} of {flagged} synced");
        let never: Vec<&String> = silent.difference(&reporting).collect();
        assert!(!never.is_empty() && never.len() < 17, "provinces that never send the flag: {never:?}");
    }
}
