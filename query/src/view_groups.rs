//! GROUP BY one text column without hashing every row's text.
//!
//! DataFusion 55 groups a `Utf8View` column by hashing and comparing every row's
//! string (`GroupValuesBytesView`); dictionary columns fare worse (row format). Our
//! text dimensions have few values (34 provinces, 3 channels, a dozen KPIs) and are
//! read from Parquet dictionary pages or the `admin_units` table, so a value repeats
//! with the same 16-byte view: a string of up to 12 bytes *is* its view, and a longer
//! one decoded from one dictionary page points at the same bytes in the same buffer.
//! [`ViewGroupAggregateExec`] therefore maps each row to its group by the view alone,
//! and reads the bytes only the first time a long view appears in a batch. It feeds
//! DataFusion's own [`GroupsAccumulator`]s exactly as `AggregateExec` does and emits
//! the same schema, so nothing above it changes. On the 50M-event benchmark this took
//! the partial `GROUP BY province_code` from 546 ms to 172 ms of CPU over 43M rows
//! (BENCHMARKS.md).
//!
//! [`ViewGroupAggregate`] is the physical optimizer rule that swaps it in for an
//! `AggregateExec` that reads raw rows (partial or single mode) grouped by exactly one
//! `Utf8View` expression, whose aggregates all have a `GroupsAccumulator` and no
//! `ORDER BY` or `DISTINCT`, with no grouping sets, group limit or dynamic filter and
//! unordered input. Anything else keeps DataFusion's operator.
//!
//! Memory is reserved from the query's pool after every batch (the sandbox's limit
//! holds); nothing spills, as elsewhere in the sandbox.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringViewArray, StringViewBuilder};
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateInputMode, AggregateOutputMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, InputOrderMode, PhysicalExpr,
    PlanProperties,
};
use foldhash::fast::RandomState;
use futures::{StreamExt, TryStreamExt};

/// Replaces each eligible `AggregateExec` with a [`ViewGroupAggregateExec`].
#[derive(Debug, Default)]
pub struct ViewGroupAggregate;

impl PhysicalOptimizerRule for ViewGroupAggregate {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match node.downcast_ref::<AggregateExec>().filter(|agg| eligible(agg)) {
                Some(agg) => Transformed::yes(Arc::new(ViewGroupAggregateExec::new(agg.clone())) as _),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "view_group_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn eligible(agg: &AggregateExec) -> bool {
    let group = agg.group_expr();
    agg.mode().input_mode() == AggregateInputMode::Raw
        && group.is_single()
        && group.expr().len() == 1
        && group.expr()[0].0.data_type(&agg.input_schema()).is_ok_and(|t| t == DataType::Utf8View)
        && agg
            .aggr_expr()
            .iter()
            .all(|a| a.groups_accumulator_supported() && a.order_bys().is_empty() && !a.is_distinct())
        && agg.limit_options().is_none()
        && agg.dynamic_expressions_produced().is_empty()
        && *agg.input_order_mode() == InputOrderMode::Linear
}

/// `AggregateExec` for one `Utf8View` group expression, grouping rows by their views
/// (see the module docs). Holds the operator it replaces, for its plan properties.
#[derive(Debug)]
pub struct ViewGroupAggregateExec {
    agg: AggregateExec,
    metrics: ExecutionPlanMetricsSet,
}

impl ViewGroupAggregateExec {
    fn new(agg: AggregateExec) -> Self {
        Self { agg, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for ViewGroupAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let aggr: Vec<&str> = self.agg.aggr_expr().iter().map(|a| a.name()).collect();
        write!(
            f,
            "ViewGroupAggregateExec: mode={:?}, gby=[{}], aggr=[{}]",
            self.agg.mode(),
            self.agg.group_expr().expr()[0].1,
            aggr.join(", ")
        )
    }
}

impl ExecutionPlan for ViewGroupAggregateExec {
    fn name(&self) -> &str {
        "ViewGroupAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.agg.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.agg.input_distribution_requirements()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.agg.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.agg.apply_expressions(f)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let agg = Arc::new(self.agg.clone()).replace_children(children, options)?;
        let agg = agg
            .downcast_ref::<AggregateExec>()
            .ok_or_else(|| DataFusionError::Internal("AggregateExec rebuilt as another operator".into()))?;
        Ok(Arc::new(Self::new(agg.clone())))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.agg.input().execute(partition, ctx.clone())?;
        let accumulators =
            self.agg.aggr_expr().iter().map(|a| a.create_groups_accumulator()).collect::<Result<Vec<_>>>()?;
        let run = Run {
            group: self.agg.group_expr().expr()[0].0.clone(),
            arguments: self.agg.aggr_expr().iter().map(|a| a.expressions()).collect(),
            filters: self.agg.filter_expr().to_vec(),
            accumulators,
            final_values: self.agg.mode().output_mode() == AggregateOutputMode::Final,
            groups: ViewGroups::default(),
            reservation: MemoryConsumer::new(format!("ViewGroupAggregateExec[{partition}]"))
                .register(ctx.memory_pool()),
            metrics: BaselineMetrics::new(&self.metrics, partition),
            schema: self.agg.schema(),
            batch_size: ctx.session_config().batch_size(),
        };
        let batches = futures::stream::once(run.aggregate(input))
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.agg.schema(), batches)))
    }
}

/// One partition's aggregation.
struct Run {
    group: Arc<dyn PhysicalExpr>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Single mode: final values; partial mode: accumulator states.
    final_values: bool,
    groups: ViewGroups,
    reservation: MemoryReservation,
    metrics: BaselineMetrics,
    schema: arrow::datatypes::SchemaRef,
    batch_size: usize,
}

impl Run {
    async fn aggregate(mut self, mut input: SendableRecordBatchStream) -> Result<Vec<RecordBatch>> {
        let mut indices = Vec::new();
        while let Some(batch) = input.next().await {
            let batch = batch?;
            let _timer = self.metrics.elapsed_compute().timer();
            let rows = batch.num_rows();
            let keys = self.group.evaluate(&batch)?.into_array(rows)?;
            let keys = keys
                .as_string_view_opt()
                .ok_or_else(|| DataFusionError::Internal(format!("group key is {}, not Utf8View", keys.data_type())))?;
            self.groups.intern(keys, &mut indices);
            let total = self.groups.len();
            for ((acc, args), filter) in self.accumulators.iter_mut().zip(&self.arguments).zip(&self.filters) {
                let values = args.iter().map(|e| e.evaluate(&batch)?.into_array(rows)).collect::<Result<Vec<_>>>()?;
                let filter = filter.as_ref().map(|f| f.evaluate(&batch)?.into_array(rows)).transpose()?;
                acc.update_batch(&values, &indices, filter.as_ref().map(|f| f.as_boolean()), total)?;
            }
            let size = self.groups.size()
                + indices.capacity() * size_of::<usize>()
                + self.accumulators.iter().map(|a| a.size()).sum::<usize>();
            self.reservation.try_resize(size)?;
        }
        let _timer = self.metrics.elapsed_compute().timer();
        if self.groups.len() == 0 {
            return Ok(Vec::new());
        }
        let mut columns = vec![Arc::new(self.groups.finish()) as _];
        for acc in &mut self.accumulators {
            if self.final_values {
                columns.push(acc.evaluate(EmitTo::All)?);
            } else {
                columns.extend(acc.state(EmitTo::All)?);
            }
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.metrics.record_output(batch.num_rows());
        let step = self.batch_size.max(1);
        Ok((0..batch.num_rows()).step_by(step).map(|at| batch.slice(at, step.min(batch.num_rows() - at))).collect())
    }
}

/// Slots in [`ViewGroups`]' cache of recent views at first (32 KiB); it doubles while
/// there are more than half as many groups, up to [`MAX_CACHE_SLOTS`] (2 MiB), so
/// that every value of a dimension (3,321 communes) fits.
const CACHE_SLOTS: usize = 1024;
const MAX_CACHE_SLOTS: usize = 1 << 16;

#[derive(Clone, Copy)]
struct Slot {
    key: u128,
    group: usize,
    /// The batch a long view was met in (its buffer and offset mean nothing in others).
    batch: u64,
}

/// An empty slot: no view is all ones (its length would be 4 GiB), and no batch has
/// this number.
const EMPTY: Slot = Slot { key: u128::MAX, group: usize::MAX, batch: u64::MAX };

/// Group numbers for text values, found through their views.
///
/// A row's view is first looked up in a small direct-mapped cache: the key of a value
/// of up to 12 bytes is its view (length and bytes, padding masked), valid in any
/// batch; a longer value's key is its view (length, prefix, buffer, offset), valid in
/// the batch it came from. Only on a miss are the maps consulted, by key for short
/// values and by bytes for long ones.
struct ViewGroups {
    cache: Box<[Slot]>,
    batch: u64,
    /// Values of up to 12 bytes, by their masked view.
    short: HashMap<u128, usize, RandomState>,
    /// Longer values, by their bytes.
    long: HashMap<Box<[u8]>, usize, RandomState>,
    long_bytes: usize,
    null: Option<usize>,
    /// Each group's value, in group order.
    values: StringViewBuilder,
    len: usize,
}

impl Default for ViewGroups {
    fn default() -> Self {
        Self {
            cache: vec![EMPTY; CACHE_SLOTS].into_boxed_slice(),
            batch: 0,
            short: HashMap::default(),
            long: HashMap::default(),
            long_bytes: 0,
            null: None,
            values: StringViewBuilder::new(),
            len: 0,
        }
    }
}

impl ViewGroups {
    fn len(&self) -> usize {
        self.len
    }

    /// Sets `out[i]` to the group of `keys[i]`, adding groups for new values.
    fn intern(&mut self, keys: &StringViewArray, out: &mut Vec<usize>) {
        out.clear();
        out.reserve(keys.len());
        self.batch += 1;
        if self.len * 2 > self.cache.len() && self.cache.len() < MAX_CACHE_SLOTS {
            self.cache = vec![EMPTY; self.cache.len() * 2].into_boxed_slice();
        }
        let bits = self.cache.len().trailing_zeros();
        let nulls = keys.nulls().filter(|n| n.null_count() > 0);
        for (i, &view) in keys.views().iter().enumerate() {
            if nulls.is_some_and(|n| n.is_null(i)) {
                let group = match self.null {
                    Some(g) => g,
                    None => {
                        self.values.append_null();
                        self.null = Some(self.len);
                        self.len += 1;
                        self.len - 1
                    }
                };
                out.push(group);
                continue;
            }
            let length = view as u32;
            let short = length <= 12;
            let key = if short { view & short_mask(length) } else { view };
            let at = slot_of(key, bits);
            let slot = self.cache[at];
            if slot.key == key && (short || slot.batch == self.batch) {
                out.push(slot.group);
                continue;
            }
            let group = if short {
                match self.short.get(&key) {
                    Some(&g) => g,
                    None => {
                        let g = self.push(keys.value(i));
                        self.short.insert(key, g);
                        g
                    }
                }
            } else {
                let value = keys.value(i);
                match self.long.get(value.as_bytes()) {
                    Some(&g) => g,
                    None => {
                        let g = self.push(value);
                        self.long.insert(value.as_bytes().into(), g);
                        self.long_bytes += value.len();
                        g
                    }
                }
            };
            self.cache[at] = Slot { key, group, batch: self.batch };
            out.push(group);
        }
    }

    fn push(&mut self, value: &str) -> usize {
        self.values.append_value(value);
        self.len += 1;
        self.len - 1
    }

    /// Bytes held, roughly (hash tables at their capacity).
    fn size(&self) -> usize {
        self.cache.len() * size_of::<Slot>()
            + self.short.capacity() * (size_of::<u128>() + size_of::<usize>() + 1)
            + self.long.capacity() * (size_of::<Box<[u8]>>() + size_of::<usize>() + 1)
            + 2 * self.long_bytes
            + self.len * size_of::<u128>()
    }

    /// Every group's value, in group order.
    fn finish(&mut self) -> StringViewArray {
        self.values.finish()
    }
}

/// The cache slot of a key among `1 << bits`: a multiplicative hash of both halves.
fn slot_of(key: u128, bits: u32) -> usize {
    let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// Keeps a short view's length and its `length` bytes, dropping the padding. Arrow
/// requires zero padding and validates it, but arrays built unchecked are not; a stray
/// byte there must not split a group.
pub(crate) fn short_mask(length: u32) -> u128 {
    match length {
        12 => u128::MAX,
        n => (1u128 << (32 + 8 * n)) - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, BooleanArray, Int64Array};
    use arrow::datatypes::{Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Values of every kind: short, exactly 12 bytes, long, with a shared prefix, empty.
    const WORDS: &[&str] =
        &["01", "", "exactly12byt", "dossier.received", "dossier.resolved", "Thành phố Hà Nội", "Tỉnh Cao Bằng", "x"];

    /// Partitions of several batches; `k` has nulls and every kind of value.
    fn table(rows_per_batch: usize, n_partitions: usize) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, true),
            Field::new("v", DataType::Int64, true),
            Field::new("f", DataType::Boolean, true),
        ]));
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let mut partitions = Vec::new();
        for _ in 0..n_partitions {
            let mut batches = Vec::new();
            for _ in 0..4 {
                let k: StringViewArray =
                    (0..rows_per_batch).map(|_| (next() % 10 != 0).then(|| WORDS[next() % WORDS.len()])).collect();
                let v: Int64Array =
                    (0..rows_per_batch).map(|_| (next() % 7 != 0).then(|| (next() % 100) as i64)).collect();
                let f: BooleanArray = (0..rows_per_batch).map(|_| Some(next() % 2 == 0)).collect();
                let columns: Vec<ArrayRef> = vec![Arc::new(k), Arc::new(v), Arc::new(f)];
                batches.push(RecordBatch::try_new(schema.clone(), columns).unwrap());
            }
            partitions.push(batches);
        }
        Arc::new(MemTable::try_new(schema, partitions).unwrap())
    }

    fn session(with_rule: bool, memory: Option<usize>) -> SessionContext {
        session_of(with_rule, memory, 2)
    }

    fn session_of(with_rule: bool, memory: Option<usize>, partitions: usize) -> SessionContext {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = memory {
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        let mut state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(partitions).with_batch_size(64))
            .with_runtime_env(runtime.build_arc().unwrap())
            .with_default_features();
        if with_rule {
            state = state.with_physical_optimizer_rule(Arc::new(ViewGroupAggregate));
        }
        SessionContext::new_with_state(state.build())
    }

    async fn run(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> String {
        run(ctx, &format!("EXPLAIN {sql}")).await
    }

    #[tokio::test]
    async fn answers_as_datafusion_does() {
        let t = table(300, 2);
        let (ours, stock) = (session(true, None), session(false, None));
        for ctx in [&ours, &stock] {
            ctx.register_table("t", t.clone()).unwrap();
        }
        let queries = [
            "SELECT k, count(*), count(v), sum(v), avg(v), min(v), max(v), min(k), max(k), bool_and(f) \
             FROM t GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT k, count(*) FILTER (WHERE f), sum(v) FILTER (WHERE v > 50) FROM t GROUP BY k ORDER BY k",
            "SELECT upper(k) AS u, count(*) FROM t WHERE v < 60 GROUP BY upper(k) ORDER BY u",
            "SELECT k, count(*) FROM t WHERE v > 1000 GROUP BY k",
            "SELECT k, count(*) AS n FROM t GROUP BY k HAVING count(*) > 10 ORDER BY n DESC, k LIMIT 3",
            // DataFusion plans this as GROUP BY k, v, then GROUP BY k: the second is ours.
            "SELECT k, count(DISTINCT v) FROM t GROUP BY k ORDER BY k",
        ];
        for sql in queries {
            assert!(plan(&ours, sql).await.contains("ViewGroupAggregateExec"), "rule applies to: {sql}");
            assert_eq!(run(&ours, sql).await, run(&stock, sql).await, "{sql}");
        }
        // Not eligible (an ordered aggregate, two group columns): DataFusion's operator stays.
        for sql in [
            "SELECT k, array_agg(v ORDER BY v) FROM t GROUP BY k ORDER BY k",
            "SELECT k, f, count(*) FROM t GROUP BY k, f ORDER BY k, f",
        ] {
            assert!(!plan(&ours, sql).await.contains("ViewGroupAggregateExec"), "rule skips: {sql}");
            assert_eq!(run(&ours, sql).await, run(&stock, sql).await, "{sql}");
        }
        // One partition: single mode, where the operator emits final values, not states.
        let (ours, stock) = (session_of(true, None, 1), session_of(false, None, 1));
        let one = table(300, 1);
        for ctx in [&ours, &stock] {
            ctx.register_table("t", one.clone()).unwrap();
        }
        for sql in &queries[..3] {
            assert!(plan(&ours, sql).await.contains("ViewGroupAggregateExec: mode=Single"), "{sql}");
            assert_eq!(run(&ours, sql).await, run(&stock, sql).await, "{sql}");
        }
    }

    #[test]
    fn equal_strings_share_a_group_across_batches() {
        let mut groups = ViewGroups::default();
        let mut out = Vec::new();
        // Batch 1: one buffer; "dossier.received" at offset 0.
        let a: StringViewArray = vec![Some("dossier.received"), Some("01"), None, Some("dossier.resolved")].into();
        groups.intern(&a, &mut out);
        assert_eq!(out, [0, 1, 2, 3]);
        // Batch 2: a different long string at the same buffer and offset must not reuse
        // batch 1's view; equal strings find their groups.
        let b: StringViewArray = vec![Some("dossier.resolved"), None, Some("dossier.received"), Some("01")].into();
        groups.intern(&b, &mut out);
        assert_eq!(out, [3, 2, 0, 1]);
        assert_eq!(groups.len(), 4);
        let values = groups.finish();
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            [Some("dossier.received"), Some("01"), None, Some("dossier.resolved")]
        );
    }

    #[tokio::test]
    async fn groups_count_against_the_memory_limit() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8View, false)]));
        let keys: StringViewArray = (0..200_000).map(|i| Some(format!("a long distinct value {i}"))).collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(keys)]).unwrap();
        let ctx = session(true, Some(4 << 20));
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        let err = ctx.sql("SELECT k, count(*) FROM t GROUP BY k").await.unwrap().collect().await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("Resources exhausted") && msg.contains("ViewGroupAggregateExec"), "{msg}");
    }
}
