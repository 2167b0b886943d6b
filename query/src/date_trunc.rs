//! `date_trunc` that remembers the last bucket.
//!
//! DataFusion 55 truncates a time-zoned timestamp to its day, week, month, quarter or
//! year through chrono, value by value: about 200 ns each, 830 ms for the 4M
//! electronic documents of "e-docs by month" on the benchmark (BENCHMARKS.md). Our
//! data files are sorted by time, so neighbouring rows share a bucket. [`MemoDateTrunc`]
//! asks DataFusion's own function for a bucket's start and for the next bucket's
//! start, once, and answers every row between them by two comparisons; results are
//! DataFusion's by construction.
//!
//! Only for time zones with a fixed offset (none, `UTC`, `+07:00`): there every
//! bucket of a unit has its calendar length, so "start plus a span longer than one
//! bucket and shorter than two" always lands in the next bucket. Anything else (named
//! zones with daylight saving, scalars, other granularities) goes to DataFusion's
//! function unchanged, as does an array whose rows change bucket more than once in
//! eight (not in time order).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{
    ArrowTimestampType, DataType, FieldRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// DataFusion's `date_trunc`, answering time-ordered arrays from a memo of the last
/// bucket (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MemoDateTrunc {
    inner: Arc<ScalarUDF>,
}

impl MemoDateTrunc {
    /// The function, to register in place of DataFusion's.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self { inner: datafusion::functions::datetime::date_trunc() })
    }

    /// The truncated array, or `None` when DataFusion's function should answer.
    fn memo(&self, args: &ScalarFunctionArgs) -> Result<Option<ArrayRef>> {
        let [granularity, ColumnarValue::Array(values)] = args.args.as_slice() else { return Ok(None) };
        let Some(span_s) = span_seconds(granularity) else { return Ok(None) };
        let DataType::Timestamp(unit, tz) = values.data_type() else { return Ok(None) };
        if !tz.as_deref().is_none_or(fixed_offset) {
            return Ok(None);
        }
        match unit {
            TimeUnit::Second => self.memo_of::<TimestampSecondType>(args, values, span_s),
            TimeUnit::Millisecond => self.memo_of::<TimestampMillisecondType>(args, values, span_s * 1_000),
            TimeUnit::Microsecond => self.memo_of::<TimestampMicrosecondType>(args, values, span_s * 1_000_000),
            TimeUnit::Nanosecond => self.memo_of::<TimestampNanosecondType>(args, values, span_s * 1_000_000_000),
        }
    }

    fn memo_of<T: ArrowTimestampType>(
        &self,
        args: &ScalarFunctionArgs,
        values: &ArrayRef,
        span: i64,
    ) -> Result<Option<ArrayRef>> {
        let input = values.as_primitive::<T>();
        let tz = match values.data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        // DataFusion's answer for one value.
        let trunc = |v: i64| -> Result<i64> {
            let one: ArrayRef = Arc::new(PrimitiveArray::<T>::new(vec![v].into(), None).with_timezone_opt(tz.clone()));
            let out = self.inner.invoke_with_args(ScalarFunctionArgs {
                args: vec![args.args[0].clone(), ColumnarValue::Array(one)],
                arg_fields: args.arg_fields.clone(),
                number_rows: 1,
                return_field: args.return_field.clone(),
                config_options: args.config_options.clone(),
            })?;
            Ok(out.into_array(1)?.as_primitive::<T>().value(0))
        };
        let (mut start, mut end) = (0i64, i64::MIN);
        let mut misses = 0usize;
        let mut out = Vec::with_capacity(input.len());
        for (i, &v) in input.values().iter().enumerate() {
            if input.is_null(i) {
                out.push(0);
                continue;
            }
            if v < start || v >= end {
                misses += 1;
                if misses > 8 && misses * 8 > i {
                    return Ok(None);
                }
                start = trunc(v)?;
                let Some(next) = start.checked_add(span) else { return Ok(None) };
                end = trunc(next)?;
                if !(start <= v && v < end) {
                    return Ok(None);
                }
            }
            out.push(start);
        }
        let array = PrimitiveArray::<T>::new(out.into(), input.nulls().cloned()).with_timezone_opt(tz);
        Ok(Some(Arc::new(array)))
    }
}

/// A span longer than any bucket of the granularity and shorter than any two in a
/// row, in seconds, for the granularities the memo serves.
fn span_seconds(granularity: &ColumnarValue) -> Option<i64> {
    let ColumnarValue::Scalar(
        ScalarValue::Utf8(Some(g)) | ScalarValue::Utf8View(Some(g)) | ScalarValue::LargeUtf8(Some(g)),
    ) = granularity
    else {
        return None;
    };
    const DAY: i64 = 86_400;
    Some(match g.to_ascii_lowercase().as_str() {
        "hour" => 5_400,
        "day" => DAY * 3 / 2,
        "week" => DAY * 10,
        "month" => DAY * 45,
        "quarter" => DAY * 135,
        "year" => DAY * 548,
        _ => return None,
    })
}

/// `UTC`, `Z` or `+HH:MM` / `-HH:MM`: a zone without daylight saving.
fn fixed_offset(tz: &str) -> bool {
    let b = tz.as_bytes();
    matches!(tz, "UTC" | "Z" | "utc")
        || (b.len() == 6
            && matches!(b[0], b'+' | b'-')
            && b[3] == b':'
            && [1, 2, 4, 5].iter().all(|&i| b[i].is_ascii_digit()))
}

impl ScalarUDFImpl for MemoDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match self.memo(&args)? {
            Some(array) => Ok(ColumnarValue::Array(array)),
            None => self.inner.invoke_with_args(args),
        }
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    use super::*;

    fn call(udf: &ScalarUDF, granularity: &str, values: &TimestampMicrosecondArray) -> ArrayRef {
        let field = Arc::new(Field::new("t", values.data_type().clone(), true));
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(granularity.into()))),
                ColumnarValue::Array(Arc::new(values.clone())),
            ],
            arg_fields: vec![Arc::new(Field::new("g", DataType::Utf8, false)), field.clone()],
            number_rows: values.len(),
            return_field: field,
            config_options: Arc::new(ConfigOptions::default()),
        };
        udf.invoke_with_args(args).unwrap().into_array(values.len()).unwrap()
    }

    /// Microsecond timestamps over three years, some null; sorted or scattered.
    fn timestamps(sorted: bool, tz: Option<&str>) -> TimestampMicrosecondArray {
        let mut seed = 11u64;
        let mut v: Vec<i64> = (0..20_000)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                1_704_067_200_000_000 + ((seed >> 20) % (3 * 366 * 86_400_000_000)) as i64
            })
            .collect();
        if sorted {
            v.sort();
        }
        let array: TimestampMicrosecondArray = v.iter().enumerate().map(|(i, &t)| (i % 97 != 0).then_some(t)).collect();
        array.with_timezone_opt(tz.map(Arc::<str>::from))
    }

    #[test]
    fn answers_as_datafusion_does() {
        let (ours, theirs) = (MemoDateTrunc::udf(), datafusion::functions::datetime::date_trunc());
        let memo = MemoDateTrunc { inner: datafusion::functions::datetime::date_trunc() };
        for tz in [None, Some("UTC"), Some("+07:00"), Some("-03:30"), Some("Asia/Ho_Chi_Minh")] {
            for sorted in [true, false] {
                let values = timestamps(sorted, tz);
                for g in ["hour", "day", "week", "month", "quarter", "year", "minute", "MONTH"] {
                    assert_eq!(
                        call(&ours, g, &values).as_ref(),
                        call(&theirs, g, &values).as_ref(),
                        "{g} in {tz:?}, sorted: {sorted}"
                    );
                }
                // The memo answers sorted arrays in fixed-offset zones, and only those.
                let field = Arc::new(Field::new("t", values.data_type().clone(), true));
                let args = ScalarFunctionArgs {
                    args: vec![
                        ColumnarValue::Scalar(ScalarValue::Utf8(Some("month".into()))),
                        ColumnarValue::Array(Arc::new(values.clone())),
                    ],
                    arg_fields: vec![Arc::new(Field::new("g", DataType::Utf8, false)), field.clone()],
                    number_rows: values.len(),
                    return_field: field,
                    config_options: Arc::new(ConfigOptions::default()),
                };
                let expected = sorted && tz != Some("Asia/Ho_Chi_Minh");
                assert_eq!(memo.memo(&args).unwrap().is_some(), expected, "{tz:?}, sorted: {sorted}");
            }
        }
    }
}
