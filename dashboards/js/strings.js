// Every word the board shows, in Vietnamese and in English (?lang=en), and the
// number and time formats. Numbers are always formatted for vi-VN (decimal comma,
// dot for thousands), as the ministry writes them, whatever the label language.

const vi = {
  lang: "vi",
  subtitle: "Trung tâm điều hành thông minh",
  national: "Toàn quốc",
  period: { today: "Hôm nay", mtd: "Tháng này", ytd: "Năm nay" },
  periodLabel: "Kỳ số liệu",
  conn: { live: "Trực tuyến", connecting: "Đang kết nối…", offline: "Mất kết nối" },
  asOf: (t) => `Số liệu đến ${t}`,
  asOfNone: "Chưa có số liệu",
  stale: "Số liệu cũ",
  staleTitle: (m) => `Không có cập nhật mới trong ${m}`,
  status: { ok: "đạt", near: "sát ngưỡng", below: "chưa đạt", none: "chưa có số liệu" },
  target: (sign, t) => `Mục tiêu ${sign} ${t}`,
  gapPoints: (g) => `${g} điểm % so với mục tiêu`,
  gapCount: (g) => `${g} so với mục tiêu`,
  sinceYesterday: (d) => `${d} so với hôm qua`,
  sinceYesterdayNone: "chưa có số liệu hôm qua",
  spark: "30 ngày qua",
  kpiOf: (name) => `Chỉ tiêu: ${name}`,
  mapTitle: "34 tỉnh, thành phố",
  mapLegend: "Màu theo chỉ tiêu đang chọn",
  rankingTitle: "Xếp hạng",
  rankingGap: "so với mục tiêu",
  rankUp: (n) => `tăng ${n} bậc so với hết hôm qua`,
  rankDown: (n) => `giảm ${n} bậc so với hết hôm qua`,
  rankSame: "giữ nguyên thứ hạng",
  rankNew: "mới có số liệu",
  noData: "chưa có số liệu",
  indexTitle: "Chỉ số phục vụ người dân, doanh nghiệp (QĐ 766)",
  indexScore: "Điểm",
  indexOf: (max) => `trên ${max} điểm đo được`,
  indexRank: (r, n) => `Hạng ${r}/${n}`,
  indexNone: "Chưa có chỉ số",
  alertsTitle: "Cảnh báo",
  alertsNone: "Không có cảnh báo",
  alertFiring: "đang cảnh báo",
  alertPending: "chờ xác nhận",
  alertResolved: "đã hết",
  severity: { critical: "nghiêm trọng", warning: "cảnh báo", info: "thông tin" },
  ago: (s) => `từ ${s} trước`,
  resolvedAgo: (s) => `hết ${s} trước`,
  more: (n) => `+${n} nữa`,
  dur: { s: "giây", m: "phút", h: "giờ", d: "ngày" },
  throughputTitle: "Sự kiện mỗi phút theo nguồn",
  perMinute: "sự kiện/phút",
  families: { motcua: "Một cửa điện tử", vdxp: "Trục VDXP", dvc: "Dịch vụ công", other: "Khác" },
  throughputNone: "Chưa có sự kiện",
  clearFilter: "Về toàn quốc",
  filterOn: (p) => `Đang xem: ${p}`,
  kpiSelect: "Chỉ tiêu tô màu bản đồ",
  summary: (ok, n) => `${ok}/${n} chỉ tiêu đạt mục tiêu`,
  islands: { hoang_sa: "QĐ. Hoàng Sa", truong_sa: "QĐ. Trường Sa" },
  tokenLabel: "Mã truy cập",
  tokenSubmit: "Xem",
  units: {
    full_online_rate: "hồ sơ", online_submission_rate: "hồ sơ", digitization_rate: "hồ sơ",
    data_reuse_rate: "hồ sơ", eid_auth_rate: "hồ sơ", on_time_rate: "hồ sơ", e_result_rate: "hồ sơ",
    online_payment_rate: "hồ sơ", satisfaction_rate: "lượt đánh giá", edoc_rate: "văn bản",
    signed_edoc_rate: "văn bản", online_work_record_rate: "hồ sơ công việc",
    digital_inspection_rate: "cuộc kiểm tra", report_online_rate: "báo cáo",
    feedback_on_time_rate: "phản ánh", feedback_satisfaction_rate: "phản ánh",
    dvcqg_sync_rate: "hồ sơ", overdue_open: "hồ sơ",
  },
};

const en = {
  ...vi,
  lang: "en",
  subtitle: "Intelligent Operations Center",
  national: "Nationwide",
  period: { today: "Today", mtd: "This month", ytd: "This year" },
  periodLabel: "Period",
  conn: { live: "Live", connecting: "Connecting…", offline: "Disconnected" },
  asOf: (t) => `Data up to ${t}`,
  asOfNone: "No data yet",
  stale: "Stale",
  staleTitle: (m) => `No new update for ${m}`,
  status: { ok: "on target", near: "near target", below: "below target", none: "no data" },
  target: (sign, t) => `Target ${sign} ${t}`,
  gapPoints: (g) => `${g} pp vs target`,
  gapCount: (g) => `${g} vs target`,
  sinceYesterday: (d) => `${d} since yesterday`,
  sinceYesterdayNone: "no data for yesterday",
  spark: "last 30 days",
  kpiOf: (name) => `Indicator: ${name}`,
  mapTitle: "34 provinces and cities",
  mapLegend: "Coloured by the selected indicator",
  rankingTitle: "Ranking",
  rankingGap: "vs target",
  rankUp: (n) => `up ${n} since end of yesterday`,
  rankDown: (n) => `down ${n} since end of yesterday`,
  rankSame: "rank unchanged",
  rankNew: "new data",
  noData: "no data",
  indexTitle: "Service quality index (Decision 766)",
  indexScore: "Score",
  indexOf: (max) => `of ${max} measured points`,
  indexRank: (r, n) => `Rank ${r}/${n}`,
  indexNone: "No index yet",
  alertsTitle: "Alerts",
  alertsNone: "No alerts",
  alertFiring: "firing",
  alertPending: "pending",
  alertResolved: "resolved",
  severity: { critical: "critical", warning: "warning", info: "info" },
  ago: (s) => `for ${s}`,
  resolvedAgo: (s) => `resolved ${s} ago`,
  more: (n) => `+${n} more`,
  dur: { s: "s", m: "min", h: "h", d: "d" },
  throughputTitle: "Events per minute by source",
  perMinute: "events/min",
  families: { motcua: "One-stop portals", vdxp: "VDXP", dvc: "Public services", other: "Others" },
  throughputNone: "No events yet",
  clearFilter: "Back to nationwide",
  filterOn: (p) => `Showing: ${p}`,
  kpiSelect: "Indicator colouring the map",
  summary: (ok, n) => `${ok}/${n} indicators on target`,
  islands: { hoang_sa: "Hoang Sa Is.", truong_sa: "Truong Sa Is." },
  tokenLabel: "Access token",
  tokenSubmit: "View",
  units: {
    ...Object.fromEntries(Object.keys(vi.units).map((k) => [k, "dossiers"])),
    satisfaction_rate: "ratings", edoc_rate: "documents", signed_edoc_rate: "documents",
    online_work_record_rate: "work records", digital_inspection_rate: "inspections",
    report_online_rate: "reports", feedback_on_time_rate: "feedback items",
    feedback_satisfaction_rate: "feedback items",
  },
};

export const S = new URLSearchParams(location.search).get("lang") === "en" ? en : vi;

const nf = (o) => new Intl.NumberFormat("vi-VN", o);
const int = nf({ maximumFractionDigits: 0 });
const pct1 = nf({ minimumFractionDigits: 1, maximumFractionDigits: 1 });
const signed1 = nf({ minimumFractionDigits: 1, maximumFractionDigits: 1, signDisplay: "exceptZero" });
const signedInt = nf({ maximumFractionDigits: 0, signDisplay: "exceptZero" });
const MINUS = (s) => s.replace("-", "−");

export const fmt = {
  int: (n) => (n == null ? "—" : int.format(n)),
  /** 0.784 -> "78,4%" */
  pct: (v) => (v == null ? "—" : pct1.format(v * 100) + "%"),
  /** points: -6.2 -> "−6,2" */
  points: (p) => MINUS(signed1.format(p)),
  signedInt: (n) => MINUS(signedInt.format(n)),
  one: (n) => pct1.format(n),
};

const timeFmt = new Intl.DateTimeFormat("vi-VN", {
  timeZone: "Asia/Ho_Chi_Minh", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const dateFmt = new Intl.DateTimeFormat(S.lang === "en" ? "en-GB" : "vi-VN", {
  timeZone: "Asia/Ho_Chi_Minh", weekday: "long", day: "2-digit", month: "2-digit", year: "numeric",
});
const dayMonthFmt = new Intl.DateTimeFormat("vi-VN", { timeZone: "Asia/Ho_Chi_Minh", day: "2-digit", month: "2-digit" });
export const time = {
  clock: (d) => timeFmt.format(d),
  date: (d) => dateFmt.format(d),
  /** "08:57:35, 02/12" */
  stamp: (d) => `${timeFmt.format(d)}, ${dayMonthFmt.format(d)}`,
};

/** A duration in seconds, in words: "3 phút", "2 giờ". */
export function duration(secs) {
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s} ${S.dur.s}`;
  if (s < 3600) return `${Math.floor(s / 60)} ${S.dur.m}`;
  if (s < 86400) return `${Math.floor(s / 3600)} ${S.dur.h}`;
  return `${Math.floor(s / 86400)} ${S.dur.d}`;
}
