//! Aggregate the events before joining them to a lookup table.
//!
//! A leader's typical join names the rows of a fact table through a table with a
//! unique key, then groups by the names:
//!
//! ```sql
//! SELECT a.province_name, count(*) FROM dossier_events d
//! JOIN admin_units a ON a.commune_code = d.commune_code GROUP BY a.province_name
//! ```
//!
//! Joined as written, all 43M events are probed into the join and 43M names are
//! grouped. Because each event meets at most one `admin_units` row, the same answer
//! comes from counting events per `commune_code` first (3,321 groups), joining those,
//! and summing the counts per name: [`EagerAggregate`] rewrites the plan that way
//! (eager aggregation, Yan and Larson, VLDB 1995).
//!
//! It applies to an `Aggregate` over an inner equi-join (optionally through a
//! projection of plain columns) when:
//! - one side is unique on its join keys, by the functional dependencies DataFusion
//!   derives from table constraints (`admin_units` declares `commune_code` its primary
//!   key), and the other is not;
//! - every aggregate is `count`, `sum`, `min` or `max` of expressions over the other
//!   (fact) side only, without `DISTINCT`, `FILTER` or `ORDER BY`;
//! - no grouping sets and no volatile group expression, and a GROUP BY if there is a
//!   `count` (with none, no rows still give one row, where `count` is 0).
//!
//! The fact side is grouped by its join keys and by the fact columns the group
//! expressions use; the partial results are merged above the join (`sum` of counts
//! and sums, `min` of minimums, `max` of maximums). A rewrite whose output types would
//! differ (a `sum` of decimals widens twice) is not made.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Dependency};
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::{Aggregate, Expr, Join, JoinType, LogicalPlan, col};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// See the module docs.
#[derive(Debug, Default)]
pub struct EagerAggregate;

impl OptimizerRule for EagerAggregate {
    fn name(&self) -> &str {
        "eager_aggregate"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let rewritten = match &plan {
            LogicalPlan::Aggregate(agg) => rewrite(agg)?,
            _ => None,
        };
        Ok(match rewritten {
            Some(plan) => Transformed::yes(plan),
            None => Transformed::no(plan),
        })
    }
}

fn rewrite(agg: &Aggregate) -> Result<Option<LogicalPlan>> {
    if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_)) || e.is_volatile()) {
        return Ok(None);
    }
    let below = match agg.input.as_ref() {
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => p.input.as_ref(),
        other => other,
    };
    let LogicalPlan::Join(join) = below else { return Ok(None) };
    if join.join_type != JoinType::Inner || join.filter.is_some() || join.null_aware {
        return Ok(None);
    }
    let Some(keys) = join
        .on
        .iter()
        .map(|(l, r)| match (l, r) {
            (Expr::Column(l), Expr::Column(r)) => Some((l.clone(), r.clone())),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let (left_keys, right_keys): (Vec<Column>, Vec<Column>) = keys.into_iter().unzip();
    let fact_is_left = match (unique_on(&join.left, &left_keys), unique_on(&join.right, &right_keys)) {
        (false, true) => true,
        (true, false) => false,
        _ => return Ok(None),
    };
    let (fact, mut groups) = if fact_is_left { (&join.left, left_keys) } else { (&join.right, right_keys) };
    // Already aggregated (by this rule, on an earlier pass, or by the query).
    if matches!(fact.as_ref(), LogicalPlan::Aggregate(_)) {
        return Ok(None);
    }
    let fact_schema = fact.schema();
    for c in agg.group_expr.iter().flat_map(|e| e.column_refs()) {
        if fact_schema.has_column(c) && !groups.contains(c) {
            groups.push(c.clone());
        }
    }

    let (mut partial, mut merged) = (Vec::new(), Vec::new());
    for (i, e) in agg.aggr_expr.iter().enumerate() {
        let Expr::AggregateFunction(f) = e else { return Ok(None) };
        let p = &f.params;
        if p.distinct
            || p.filter.is_some()
            || !p.order_by.is_empty()
            || !e.column_refs().iter().all(|c| fact_schema.has_column(c))
        {
            return Ok(None);
        }
        let name = format!("__eager_{i}");
        let part = col(Column::from_name(&name));
        let merge = match f.func.name() {
            // Without GROUP BY, no rows still make one row: `count` says 0 where a `sum`
            // of partial counts would say NULL.
            "count" if agg.group_expr.is_empty() => return Ok(None),
            "count" | "sum" => sum(part),
            "min" => min(part),
            "max" => max(part),
            _ => return Ok(None),
        };
        partial.push(e.clone().alias(&name));
        merged.push(merge.alias(agg.schema.field(agg.group_expr.len() + i).name()));
    }

    let pre = Arc::new(LogicalPlan::Aggregate(Aggregate::try_new(
        fact.clone(),
        groups.into_iter().map(Expr::Column).collect(),
        partial,
    )?));
    let (left, right) = if fact_is_left { (pre, join.right.clone()) } else { (join.left.clone(), pre) };
    let join = Join::try_new(
        left,
        right,
        join.on.clone(),
        None,
        join.join_type,
        join.join_constraint,
        join.null_equality,
        join.null_aware,
    )?;
    let new = Aggregate::try_new(Arc::new(LogicalPlan::Join(join)), agg.group_expr.clone(), merged)?;
    let same_output = new.schema.fields().len() == agg.schema.fields().len()
        && new
            .schema
            .iter()
            .zip(agg.schema.iter())
            .all(|((q1, f1), (q2, f2))| q1 == q2 && f1.name() == f2.name() && f1.data_type() == f2.data_type());
    Ok(same_output.then_some(LogicalPlan::Aggregate(new)))
}

/// Whether no two rows of `plan` share values of `keys` (a non-null unique key is
/// among them).
fn unique_on(plan: &LogicalPlan, keys: &[Column]) -> bool {
    let schema = plan.schema();
    let Some(indices) = keys.iter().map(|c| schema.index_of_column(c).ok()).collect::<Option<Vec<_>>>() else {
        return false;
    };
    schema.functional_dependencies().iter().any(|d| {
        d.mode == Dependency::Single
            && !d.nullable
            && !d.source_indices.is_empty()
            && d.source_indices.iter().all(|i| indices.contains(i))
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringViewArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::runtime_env::RuntimeEnv;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use ioc_core::AdminUnits;

    use super::*;
    use crate::context::{admin_units_table, new_session};

    /// Events in real communes, a code no commune has, and rows without one.
    fn events() -> Arc<MemTable> {
        let units = AdminUnits::builtin();
        let schema = Arc::new(Schema::new(vec![
            Field::new("commune_code", DataType::Utf8View, true),
            Field::new("channel", DataType::Utf8View, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let mut partitions = Vec::new();
        for p in 0..2u64 {
            let rows = 5_000u64;
            let code: StringViewArray = (0..rows)
                .map(|i| match (i * 7919 + p) % 50 {
                    0 => None,
                    1 => Some("99999".to_string()),
                    k => Some(units.communes()[((i * 31 + k) % 400) as usize].commune_code.clone()),
                })
                .collect();
            let channel: StringViewArray =
                (0..rows).map(|i| Some(["online", "counter", "post"][(i % 3) as usize])).collect();
            let v: Int64Array = (0..rows).map(|i| (i % 11 != 0).then_some((i * 13 % 97) as i64)).collect();
            let columns: Vec<ArrayRef> = vec![Arc::new(code), Arc::new(channel), Arc::new(v)];
            partitions.push(vec![RecordBatch::try_new(schema.clone(), columns).unwrap()]);
        }
        Arc::new(MemTable::try_new(schema, partitions).unwrap())
    }

    async fn run(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn answers_as_the_join_as_written() {
        let (events, units) = (events(), admin_units_table(&AdminUnits::builtin()));
        let ours = new_session(Arc::new(RuntimeEnv::default()));
        let stock = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        for ctx in [&ours, &stock] {
            ctx.register_table("e", events.clone()).unwrap();
            ctx.register_table("admin_units", units.clone()).unwrap();
        }
        let eligible = [
            "SELECT a.province_name, count(*) AS n FROM e JOIN admin_units a ON a.commune_code = e.commune_code \
             GROUP BY a.province_name ORDER BY n DESC, a.province_name",
            "SELECT a.province_code, e.channel, count(v), sum(v), min(v), max(v) \
             FROM admin_units a JOIN e ON e.commune_code = a.commune_code WHERE a.commune_type <> 'phường' AND v > 5 \
             GROUP BY a.province_code, e.channel ORDER BY 1, 2",
            "SELECT upper(a.province_name) AS p, count(*) FROM e JOIN admin_units a USING (commune_code) \
             GROUP BY upper(a.province_name) ORDER BY p LIMIT 5",
            // Without GROUP BY, sum, min and max are NULL over no rows either way.
            "SELECT sum(v), max(v) FROM e JOIN admin_units a ON a.commune_code = e.commune_code WHERE a.province_code = 'xx'",
            "SELECT sum(v), min(v) FROM e JOIN admin_units a ON a.commune_code = e.commune_code",
        ];
        for sql in eligible {
            assert!(run(&ours, &format!("EXPLAIN {sql}")).await.contains("__eager_0"), "rewritten: {sql}");
            assert_eq!(run(&ours, sql).await, run(&stock, sql).await, "{sql}");
        }
        let not_eligible = [
            // No GROUP BY: over no rows count is 0, a sum of partial counts NULL.
            "SELECT count(*) FROM e JOIN admin_units a ON a.commune_code = e.commune_code WHERE a.province_code = 'xx'",
            // avg does not merge by one function; an aggregate of the lookup side;
            // a left join keeps unmatched rows; DISTINCT.
            "SELECT a.province_code, avg(v) FROM e JOIN admin_units a ON a.commune_code = e.commune_code GROUP BY 1 ORDER BY 1",
            "SELECT e.channel, count(a.commune_name) FROM e JOIN admin_units a ON a.commune_code = e.commune_code GROUP BY 1 ORDER BY 1",
            "SELECT a.province_code, count(*) FROM e LEFT JOIN admin_units a ON a.commune_code = e.commune_code GROUP BY 1 ORDER BY 1",
            "SELECT a.province_code, count(DISTINCT v) FROM e JOIN admin_units a ON a.commune_code = e.commune_code GROUP BY 1 ORDER BY 1",
            // admin_units is not unique on province_code: each event meets many rows.
            "SELECT a.province_name, count(*) FROM e JOIN admin_units a ON a.province_code = substr(e.commune_code, 1, 2) \
             GROUP BY 1 ORDER BY 1",
        ];
        for sql in not_eligible {
            assert!(!run(&ours, &format!("EXPLAIN {sql}")).await.contains("__eager_"), "left alone: {sql}");
            assert_eq!(run(&ours, sql).await, run(&stock, sql).await, "{sql}");
        }
    }
}
