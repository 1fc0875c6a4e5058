//! Replays the `json_bodies` fuzzing corpus (`fuzz/corpus/json_bodies`):
//! seeds and any input a fuzzer run kept; none may panic.

#[test]
fn json_bodies_corpus_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/json_bodies");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        ca_server::fuzzing::json_bodies(&data);
        count += 1;
    }
    assert!(count > 0, "empty corpus {}", dir.display());
}
