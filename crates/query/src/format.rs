//! Rendering result batches: JSON rows (arrays in column order), CSV, and Arrow IPC streams.
//!
//! JSON keeps numbers and booleans native, nests lists and structs, and renders every other
//! type (dates, timestamps, intervals, blobs…) as DuckDB-style text. Decimals become JSON
//! numbers (exact for integers within 64 bits, else the nearest double).

use crate::error::{Error, Result};
use duckdb::arrow::array::{Array, AsArray, RecordBatch};
use duckdb::arrow::datatypes::{DataType, SchemaRef};
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

fn render_error(error: impl std::fmt::Display) -> Error {
    Error::Engine { step: "rendering the result", message: error.to_string() }
}

/// The rows of `batches` as JSON arrays.
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>> {
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for batch in batches {
        let columns = batch.columns();
        for row in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(columns.len());
            for column in columns {
                values.push(json_value(column.as_ref(), row)?);
            }
            rows.push(values);
        }
    }
    Ok(rows)
}

fn display(array: &dyn Array, row: usize) -> Result<String> {
    let options = FormatOptions::default();
    let formatter = ArrayFormatter::try_new(array, &options).map_err(render_error)?;
    Ok(formatter.value(row).to_string())
}

/// One cell as JSON.
fn json_value(array: &dyn Array, row: usize) -> Result<Value> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    use duckdb::arrow::datatypes as t;
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<t::Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<t::Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<t::Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<t::Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<t::UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<t::UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<t::UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<t::UInt64Type>().value(row).into(),
        DataType::Float32 => float(f64::from(array.as_primitive::<t::Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<t::Float64Type>().value(row)),
        DataType::Decimal128(..) | DataType::Decimal256(..) | DataType::Decimal64(..) | DataType::Decimal32(..) => {
            let text = display(array, row)?;
            match text.parse::<i64>() {
                Ok(integer) => integer.into(),
                Err(_) => match text.parse::<f64>() {
                    Ok(number) => float(number),
                    Err(_) => Value::String(text),
                },
            }
        }
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_owned()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_owned()),
        DataType::List(_) => list(array.as_list::<i32>().value(row).as_ref())?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row).as_ref())?,
        DataType::FixedSizeList(..) => list(array.as_fixed_size_list().value(row).as_ref())?,
        DataType::Struct(fields) => {
            let structure = array.as_struct();
            let mut object = Map::new();
            for (index, field) in fields.iter().enumerate() {
                object.insert(field.name().clone(), json_value(structure.column(index).as_ref(), row)?);
            }
            Value::Object(object)
        }
        DataType::Map(..) => {
            let map = array.as_map();
            let entries = map.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut object = Map::new();
            for index in 0..entries.len() {
                let key = match json_value(keys.as_ref(), index)? {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                object.insert(key, json_value(values.as_ref(), index)?);
            }
            Value::Object(object)
        }
        DataType::Dictionary(..) => Value::String(display(array, row)?),
        _ => Value::String(display(array, row)?),
    })
}

fn float(value: f64) -> Value {
    Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number)
}

fn list(values: &dyn Array) -> Result<Value> {
    (0..values.len()).map(|index| json_value(values, index)).collect::<Result<Vec<_>>>().map(Value::Array)
}

/// The result as CSV (RFC 4180: a header line, `,`-separated, quoted where needed, empty for
/// NULL, CRLF line ends).
pub fn csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String> {
    let mut writer = CsvText::new(csv::Terminator::CRLF);
    writer.record(schema.fields().iter().map(|field| field.name().as_str()))?;
    let options = FormatOptions::default().with_null("");
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(render_error)?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters.iter().map(|formatter| formatter.value(row).to_string()).collect();
            writer.record(cells.iter().map(String::as_str))?;
        }
    }
    writer.finish()
}

/// CSV text, written by the `csv` crate: the one CSV writer of the API's answers and the
/// client's rendering of them.
pub(crate) struct CsvText {
    writer: csv::Writer<Vec<u8>>,
}

impl CsvText {
    /// An empty text whose records end with `terminator`.
    pub(crate) fn new(terminator: csv::Terminator) -> Self {
        Self { writer: csv::WriterBuilder::new().terminator(terminator).from_writer(Vec::new()) }
    }

    /// Appends one record.
    pub(crate) fn record<'a>(&mut self, fields: impl IntoIterator<Item = &'a str>) -> Result<()> {
        self.writer.write_record(fields).map_err(|error| Error::Internal { message: format!("writing CSV: {error}") })
    }

    /// The text written.
    pub(crate) fn finish(self) -> Result<String> {
        let bytes =
            self.writer.into_inner().map_err(|error| Error::Internal { message: format!("writing CSV: {error}") })?;
        String::from_utf8(bytes).map_err(|error| Error::Internal { message: format!("writing CSV: {error}") })
    }
}

/// The result as an Arrow IPC stream.
pub fn arrow_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(render_error)?;
    for batch in batches {
        writer.write(batch).map_err(render_error)?;
    }
    writer.finish().map_err(render_error)?;
    writer.into_inner().map_err(render_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(sql: &str) -> (SchemaRef, Vec<RecordBatch>) {
        let connection = duckdb::Connection::open_in_memory().expect("duckdb");
        let mut statement = connection.prepare(sql).expect("prepare");
        let batches: Vec<RecordBatch> = statement.query_arrow([]).expect("query").collect();
        (statement.schema(), batches)
    }

    #[test]
    fn json_keeps_types() {
        let (_, data) = batches(
            "SELECT 1::INTEGER AS i, 2.5::DOUBLE AS d, 'x' AS s, NULL AS n, true AS b, 12.34::DECIMAL(10,2) AS dec, \
             sum(x)::HUGEINT AS h, DATE '2024-01-02' AS day, [1, 2] AS l, {'a': 1} AS st FROM (VALUES (7)) v(x)",
        );
        let rows = json_rows(&data).expect("json");
        assert_eq!(
            Value::Array(rows[0].clone()),
            serde_json::json!([1, 2.5, "x", null, true, 12.34, 7, "2024-01-02", [1, 2], {"a": 1}])
        );
    }

    #[test]
    fn csv_quotes_and_ipc_round_trips() {
        let (schema, data) = batches("SELECT * FROM (VALUES (1, 'a,b'), (2, 'say \"hi\"'), (NULL, NULL)) t(id, text)");
        assert_eq!(csv(&schema, &data).expect("csv"), "id,text\r\n1,\"a,b\"\r\n2,\"say \"\"hi\"\"\"\r\n,\r\n");
        let bytes = arrow_ipc(&schema, &data).expect("ipc");
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("reader");
        let rows: usize = reader.map(|batch| batch.expect("batch").num_rows()).sum();
        assert_eq!(rows, 3);
    }
}
