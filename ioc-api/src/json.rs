//! Arrow results as the JSON and CSV of `POST /api/v1/sql`.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, SchemaRef, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Number, Value, json};

/// A SQL-ish name for an Arrow type, as shown to users.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 => "smallint".into(),
        DataType::Int32 | DataType::UInt8 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Dictionary(_, v) => type_name(v),
        other => other.to_string().to_lowercase(),
    }
}

pub fn columns(schema: &SchemaRef) -> Value {
    Value::Array(schema.fields().iter().map(|f| json!({"name": f.name(), "type": type_name(f.data_type())})).collect())
}

fn num<T: Into<Number>>(v: T) -> Value {
    Value::Number(v.into())
}

fn float(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// One column's values as JSON: numbers and booleans natively, timestamps as RFC 3339,
/// binary as hex, everything else as Arrow's display string.
fn column_values(col: &ArrayRef) -> Vec<Value> {
    let n = col.len();
    macro_rules! prim {
        ($t:ty, $f:expr) => {{
            let a = col.as_primitive::<$t>();
            (0..n).map(|i| if a.is_null(i) { Value::Null } else { $f(a.value(i)) }).collect()
        }};
    }
    match col.data_type() {
        DataType::Boolean => {
            let a = col.as_boolean();
            (0..n).map(|i| if a.is_null(i) { Value::Null } else { Value::Bool(a.value(i)) }).collect()
        }
        DataType::Int8 => prim!(Int8Type, num),
        DataType::Int16 => prim!(Int16Type, num),
        DataType::Int32 => prim!(Int32Type, num),
        DataType::Int64 => prim!(Int64Type, num),
        DataType::UInt8 => prim!(UInt8Type, num),
        DataType::UInt16 => prim!(UInt16Type, num),
        DataType::UInt32 => prim!(UInt32Type, num),
        DataType::UInt64 => prim!(UInt64Type, num),
        DataType::Float32 => prim!(Float32Type, |v: f32| float(f64::from(v))),
        DataType::Float64 => prim!(Float64Type, float),
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            (0..n).map(|i| if a.is_null(i) { Value::Null } else { Value::String(a.value(i).into()) }).collect()
        }
        DataType::Utf8View => {
            let a = col.as_string_view();
            (0..n).map(|i| if a.is_null(i) { Value::Null } else { Value::String(a.value(i).into()) }).collect()
        }
        DataType::Binary => {
            let a = col.as_binary::<i32>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::String(a.value(i).iter().map(|b| format!("{b:02x}")).collect())
                    }
                })
                .collect()
        }
        _ => {
            let opts = FormatOptions::default().with_null("");
            match ArrayFormatter::try_new(col.as_ref(), &opts) {
                Ok(f) => (0..n)
                    .map(|i| if col.is_null(i) { Value::Null } else { Value::String(f.value(i).to_string()) })
                    .collect(),
                Err(_) => vec![Value::Null; n],
            }
        }
    }
}

/// Rows as arrays of JSON values.
pub fn rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<Vec<Value>> = b.columns().iter().map(column_values).collect();
        for i in 0..b.num_rows() {
            out.push(Value::Array(cols.iter().map(|c| c[i].clone()).collect()));
        }
    }
    out
}

/// Batches as CSV with a header line.
pub fn csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
        if batches.is_empty() {
            w.write(&RecordBatch::new_empty(schema.clone()))?;
        }
        for b in batches {
            w.write(b)?;
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn values_keep_their_json_types_and_nulls() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", ioc_storage::schema::timestamp_type(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(Float64Array::from(vec![Some(0.5), Some(f64::NAN)])),
                Arc::new(BooleanArray::from(vec![Some(true), None])),
                Arc::new(StringArray::from(vec![Some("Hà Nội"), None])),
                Arc::new(TimestampMicrosecondArray::from(vec![Some(0), None]).with_timezone("UTC")),
            ],
        )
        .unwrap();
        assert_eq!(
            Value::Array(rows(std::slice::from_ref(&batch))),
            json!([[1, 0.5, true, "Hà Nội", "1970-01-01T00:00:00Z"], [null, null, null, null, null]])
        );
        assert_eq!(
            columns(&schema),
            json!([{"name":"n","type":"bigint"},{"name":"f","type":"double"},{"name":"b","type":"boolean"},
                   {"name":"s","type":"text"},{"name":"t","type":"timestamptz"}])
        );
        let text = String::from_utf8(csv(&schema, &[batch]).unwrap()).unwrap();
        assert!(text.starts_with("n,f,b,s,t\n1,0.5,true,Hà Nội,"), "{text}");
    }
}
