//! Reading a pprof protobuf profile in the tests, without a protobuf
//! library: the wire format decoded field by field into the parts of
//! `profile.proto` the heap profile writes, and `go tool pprof` where it is
//! installed.

use std::process::Command;

/// A decoded profile (the fields the heap profile writes).
#[derive(Debug, Default)]
pub struct Profile {
    pub strings: Vec<String>,
    /// (type, unit) as strings.
    pub sample_types: Vec<(String, String)>,
    pub period_type: Option<(String, String)>,
    pub period: u64,
    pub samples: Vec<Sample>,
    pub locations: Vec<Location>,
    pub mappings: Vec<Mapping>,
}

#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub location_ids: Vec<u64>,
    pub values: Vec<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct Location {
    pub id: u64,
    pub mapping_id: u64,
    pub address: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Mapping {
    pub id: u64,
    pub start: u64,
    pub limit: u64,
    pub offset: u64,
    pub filename: u64,
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let c = *b.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(c & 0x7f) << shift;
        if c < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The fields of one message, in order.
fn fields(b: &[u8]) -> Result<Vec<(u64, Value<'_>)>, String> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let key = varint(b, &mut at)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(b, &mut at)?),
            2 => {
                let len = varint(b, &mut at)? as usize;
                let end = at
                    .checked_add(len)
                    .filter(|&e| e <= b.len())
                    .ok_or("field past the end")?;
                let v = &b[at..end];
                at = end;
                Value::Bytes(v)
            }
            w => return Err(format!("wire type {w} (the profile writes only 0 and 2)")),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn packed(b: &[u8]) -> Result<Vec<u64>, String> {
    let mut at = 0;
    let mut v = Vec::new();
    while at < b.len() {
        v.push(varint(b, &mut at)?);
    }
    Ok(v)
}

fn nums(b: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    fields(b)?
        .into_iter()
        .map(|(f, v)| match v {
            Value::Varint(x) => Ok((f, x)),
            Value::Bytes(_) => Err(format!("field {f}: bytes where a number was expected")),
        })
        .collect()
}

fn get(fs: &[(u64, u64)], field: u64) -> u64 {
    fs.iter().find(|(f, _)| *f == field).map_or(0, |(_, v)| *v)
}

/// Decodes a profile; `Err` on anything the wire format does not allow.
pub fn decode(b: &[u8]) -> Result<Profile, String> {
    let mut p = Profile::default();
    let mut types = Vec::new();
    let mut period_type = None;
    for (field, v) in fields(b)? {
        match (field, v) {
            (1 | 11, Value::Bytes(m)) => {
                let fs = nums(m)?;
                let t = (get(&fs, 1), get(&fs, 2));
                if field == 1 {
                    types.push(t);
                } else {
                    period_type = Some(t);
                }
            }
            (2, Value::Bytes(m)) => {
                let mut s = Sample::default();
                for (f, v) in fields(m)? {
                    match (f, v) {
                        (1, Value::Bytes(x)) => s.location_ids.extend(packed(x)?),
                        (2, Value::Bytes(x)) => s.values.extend(packed(x)?),
                        (1, Value::Varint(x)) => s.location_ids.push(x),
                        (2, Value::Varint(x)) => s.values.push(x),
                        _ => {}
                    }
                }
                p.samples.push(s);
            }
            (3, Value::Bytes(m)) => {
                let fs = nums(m)?;
                p.mappings.push(Mapping {
                    id: get(&fs, 1),
                    start: get(&fs, 2),
                    limit: get(&fs, 3),
                    offset: get(&fs, 4),
                    filename: get(&fs, 5),
                });
            }
            (4, Value::Bytes(m)) => {
                let fs = nums(m)?;
                p.locations.push(Location {
                    id: get(&fs, 1),
                    mapping_id: get(&fs, 2),
                    address: get(&fs, 3),
                });
            }
            (6, Value::Bytes(s)) => p.strings.push(String::from_utf8_lossy(s).into_owned()),
            (12, Value::Varint(x)) => p.period = x,
            (f, _) => return Err(format!("unexpected profile field {f}")),
        }
    }
    let name = |i: u64| {
        p.strings
            .get(i as usize)
            .cloned()
            .ok_or(format!("string {i} missing"))
    };
    p.sample_types = types
        .iter()
        .map(|&(t, u)| Ok((name(t)?, name(u)?)))
        .collect::<Result<_, String>>()?;
    p.period_type = period_type
        .map(|(t, u)| Ok::<_, String>((name(t)?, name(u)?)))
        .transpose()?;
    Ok(p)
}

/// `go` where it is installed (Debian's `golang-go`), for `go tool pprof`;
/// `None` otherwise (the tests that need it skip, with a message).
pub fn go() -> Option<&'static str> {
    Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some("go")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_hand_made_profile() {
        // strings "", "a"; a sample type (1, 1); a sample with locations
        // 1, 300 (packed) and value 5; a location; period 7.
        let b = [
            0x32, 0x00, // string ""
            0x32, 0x01, b'a', // string "a"
            0x0a, 0x04, 0x08, 0x01, 0x10, 0x01, // sample_type
            0x12, 0x08, 0x0a, 0x03, 0x01, 0xac, 0x02, 0x12, 0x01, 0x05, // sample
            0x22, 0x04, 0x08, 0x01, 0x18, 0x10, // location id 1 address 16
            0x60, 0x07, // period
        ];
        let p = decode(&b).unwrap();
        assert_eq!(p.strings, ["", "a"]);
        assert_eq!(p.sample_types, [("a".to_string(), "a".to_string())]);
        assert_eq!(p.samples[0].location_ids, [1, 300]);
        assert_eq!(p.samples[0].values, [5]);
        assert_eq!((p.locations[0].id, p.locations[0].address), (1, 16));
        assert_eq!(p.period, 7);
        assert!(decode(&[0x32, 0x05, b'a']).is_err());
    }
}
