//! `text_column = 'literal'` compared by views.
//!
//! Arrow compares a `Utf8View` column to a longer-than-12-byte literal by length and
//! 4-byte prefix, then by `memcmp` for every row that shares them: `type =
//! 'dossier.received'` calls `memcmp` for nearly every dossier event, since every type
//! starts with `doss`. Our text columns come from Parquet dictionary pages, so within
//! one array a value keeps one view (buffer and offset). [`ViewEqExpr`] compares each
//! row's view, and the bytes only the first time a view appears in the array (a small
//! direct-mapped memo of verdicts); a literal of up to 12 bytes is its view, so the
//! test is one 128-bit comparison.
//!
//! [`ViewEquality`] swaps it into `FilterExec` predicates for `=` and `<>` between a
//! `Utf8View` column and a `Utf8View` literal; the filter is otherwise unchanged.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringViewArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

/// Replaces `column = 'literal'` and `column <> 'literal'` on `Utf8View` columns in
/// filter predicates with [`ViewEqExpr`].
#[derive(Debug, Default)]
pub struct ViewEquality;

impl PhysicalOptimizerRule for ViewEquality {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else { return Ok(Transformed::no(node)) };
            let schema = filter.input().schema();
            let predicate = filter.predicate().clone().transform_up(|e| Ok(rewrite(e, &schema)))?;
            if !predicate.transformed {
                return Ok(Transformed::no(node));
            }
            let filter = FilterExecBuilder::from(filter).with_predicate(predicate.data).build()?;
            Ok(Transformed::yes(Arc::new(filter) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "view_equality"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn rewrite(e: Arc<dyn PhysicalExpr>, schema: &Schema) -> Transformed<Arc<dyn PhysicalExpr>> {
    let Some(binary) = e.downcast_ref::<BinaryExpr>() else { return Transformed::no(e) };
    let negated = match binary.op() {
        Operator::Eq => false,
        Operator::NotEq => true,
        _ => return Transformed::no(e),
    };
    let (l, r) = (binary.left(), binary.right());
    let (column, literal) = match (l.downcast_ref::<Column>(), r.downcast_ref::<Literal>()) {
        (Some(_), Some(lit)) => (l, lit),
        _ => match (r.downcast_ref::<Column>(), l.downcast_ref::<Literal>()) {
            (Some(_), Some(lit)) => (r, lit),
            _ => return Transformed::no(e),
        },
    };
    let ScalarValue::Utf8View(Some(value)) = literal.value() else { return Transformed::no(e) };
    if column.data_type(schema).ok() != Some(DataType::Utf8View) {
        return Transformed::no(e);
    }
    Transformed::yes(Arc::new(ViewEqExpr { column: column.clone(), value: value.clone(), negated }))
}

/// `column = value` (or `<>`) over a `Utf8View` column; NULL where the column is.
#[derive(Debug, Eq)]
pub struct ViewEqExpr {
    column: Arc<dyn PhysicalExpr>,
    value: String,
    negated: bool,
}

impl PartialEq for ViewEqExpr {
    fn eq(&self, other: &Self) -> bool {
        self.column.eq(&other.column) && self.value == other.value && self.negated == other.negated
    }
}

impl Hash for ViewEqExpr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.column.hash(state);
        self.value.hash(state);
        self.negated.hash(state);
    }
}

impl fmt::Display for ViewEqExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}, {})", if self.negated { "view_ne" } else { "view_eq" }, self.column, self.value)
    }
}

impl PhysicalExpr for ViewEqExpr {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.column.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array = self.column.evaluate(batch)?.into_array(batch.num_rows())?;
        let array = array.as_string_view_opt().ok_or_else(|| {
            DataFusionError::Internal(format!("{} is {}, not Utf8View", self.column, array.data_type()))
        })?;
        let equal = view_eq(array, &self.value);
        let values = if self.negated { !&equal } else { equal };
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(values, array.nulls().cloned()))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.column]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn PhysicalExpr>>) -> Result<Arc<dyn PhysicalExpr>> {
        let [column] =
            <[_; 1]>::try_from(children).map_err(|_| DataFusionError::Internal("ViewEqExpr takes one child".into()))?;
        Ok(Arc::new(Self { column, value: self.value.clone(), negated: self.negated }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.column.fmt_sql(f)?;
        write!(f, " {} '{}'", if self.negated { "<>" } else { "=" }, self.value.replace('\'', "''"))
    }
}

/// Whether each row equals `value` (whatever a null row holds).
fn view_eq(array: &StringViewArray, value: &str) -> BooleanBuffer {
    let views = array.views();
    let length = value.len();
    if length <= 12 {
        // A short value is its view: length and bytes; the padding is masked off, as in
        // `view_groups` (Arrow validates it is zero, but arrays built unchecked are not).
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&(length as u32).to_le_bytes());
        bytes[4..4 + length].copy_from_slice(value.as_bytes());
        let target = u128::from_le_bytes(bytes);
        let mask = crate::view_groups::short_mask(length as u32);
        return BooleanBuffer::collect_bool(views.len(), |i| views[i] & mask == target);
    }
    // A long view holds length, prefix, buffer and offset: equal length and prefix, then
    // the bytes, remembered per (buffer, offset) for this array.
    let head =
        u64::from(length as u32) | (u64::from(u32::from_le_bytes(value.as_bytes()[..4].try_into().unwrap())) << 32);
    let mut memo = [(u64::MAX, false); 16];
    BooleanBuffer::collect_bool(views.len(), |i| {
        let view = views[i];
        if view as u64 != head {
            return false;
        }
        let place = (view >> 64) as u64;
        let slot = &mut memo[(place.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize];
        if slot.0 == place {
            return slot.1;
        }
        let equal = array.value(i) == value;
        *slot = (place, equal);
        equal
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::ArrayRef;
    use arrow::datatypes::Field;
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    #[test]
    fn compares_short_and_long_values_across_buffers() {
        let values = ["dossier.received", "dossier.resolved", "01", "", "dossier.receivedX", "dossier.receive"];
        // Small buffers: the same offset recurs in different buffers.
        let mut b = arrow::array::StringViewBuilder::new().with_fixed_block_size(32);
        let mut expected = Vec::new();
        for i in 0..500 {
            let v = values[(i * 7) % values.len()];
            if i % 13 == 0 {
                b.append_null();
                expected.push(None);
            } else {
                b.append_value(v);
                expected.push(Some(v));
            }
        }
        let array = b.finish();
        for value in values.iter().chain(&["0", "dossier.resolve", "zz"]) {
            let got = view_eq(&array, value);
            for (i, e) in expected.iter().enumerate() {
                if let Some(e) = e {
                    assert_eq!(got.value(i), e == value, "row {i}: {e:?} = {value:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn filters_as_datafusion_does() {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8View, true)]));
        let t: StringViewArray = (0..3000)
            .map(|i| (i % 11 != 0).then(|| ["dossier.received", "dossier.resolved", "01", "Thành phố Hà Nội"][i % 4]))
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(t) as ArrayRef]).unwrap();
        let table = Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap());
        let session = |ours: bool| {
            let mut state = SessionStateBuilder::new()
                .with_config(SessionConfig::new().with_target_partitions(1))
                .with_default_features();
            if ours {
                state = state.with_physical_optimizer_rule(Arc::new(ViewEquality));
            }
            let ctx = SessionContext::new_with_state(state.build());
            ctx.register_table("e", table.clone()).unwrap();
            ctx
        };
        let (ours, stock) = (session(true), session(false));
        for sql in [
            "SELECT t, count(*) FROM e WHERE t = 'dossier.received' GROUP BY t",
            "SELECT t, count(*) FROM e WHERE t <> 'dossier.received' GROUP BY t ORDER BY t",
            "SELECT count(*) FROM e WHERE '01' = t OR t = 'Thành phố Hà Nội'",
            "SELECT count(*) FROM e WHERE NOT (t = 'dossier.resolved')",
        ] {
            let run = |ctx: &SessionContext| {
                let ctx = ctx.clone();
                async move {
                    let plan = ctx.sql(&format!("EXPLAIN {sql}")).await.unwrap().collect().await.unwrap();
                    let rows = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                    (
                        pretty_format_batches(&plan).unwrap().to_string(),
                        pretty_format_batches(&rows).unwrap().to_string(),
                    )
                }
            };
            let ((_, expected), (plan, got)) = (run(&stock).await, run(&ours).await);
            assert_eq!(got, expected, "{sql}");
            assert!(plan.contains("view_eq(t@0") || plan.contains("view_ne(t@0"), "rewritten: {sql}\n{plan}");
        }
    }
}
