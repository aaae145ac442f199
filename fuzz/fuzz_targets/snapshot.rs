//! Snapshot and migration-stream bytes -> the record reader: every record is read and
//! decoded (the machine state included) or refused, never a panic, a hang or an
//! allocation larger than the bound. Half the inputs get a valid magic and format version
//! in front, so the fuzzer spends its time on the records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmc_runtime::migration::{versions, RecordReader, SNAPSHOT_MAGIC, STREAM_MAGIC};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let magic = if choice & 1 == 0 { SNAPSHOT_MAGIC } else { STREAM_MAGIC };
    let input = if choice & 2 == 0 {
        [&magic[..], &versions(magic).1.to_le_bytes(), rest].concat()
    } else {
        rest.to_vec()
    };
    let Ok(mut reader) = RecordReader::start(&input[..], magic, "fuzz") else {
        return;
    };
    // Each record consumes at least its 5-byte head: the loop ends.
    while let Ok(Some(_)) = reader.next_record() {}
});
