//! The cached read and save: the document left in the cache is always the parse of the file
//! written, and a file changed by another writer is parsed again.

use std::time::Duration;

use super::*;

/// One change a writer makes between two saves.
#[derive(Debug, Clone)]
enum Step {
    /// The lesson at this index (modulo the count) reinforced: one more fire, a correction
    /// id, optionally a longer description and another state.
    Reinforce {
        at: usize,
        description: Option<String>,
        state: Option<State>,
    },
    /// A new lesson at the end.
    Add(String),
    /// The lesson at this index killed (it leaves for the archive).
    Kill(usize),
    /// Several changes in one save, as a batch of corrections makes them (the same lesson
    /// may be reinforced more than once).
    Several(Vec<Step>),
}

/// One correction's change: a lesson reinforced or added.
fn learning_step() -> impl Strategy<Value = Step> {
    let description = "[A-Za-z][a-z ]{0,60}";
    let state = prop::sample::select(vec![State::Instinct, State::Pattern, State::Rule]);
    prop_oneof![
        2 => (any::<usize>(), prop::option::of(description), prop::option::of(state))
            .prop_map(|(at, description, state)| Step::Reinforce { at, description, state }),
        1 => description.prop_map(Step::Add),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => learning_step(),
        1 => any::<usize>().prop_map(Step::Kill),
        3 => prop::collection::vec(learning_step(), 2..8).prop_map(Step::Several),
    ]
}

/// Makes `step`'s change to `document`.
fn take_step(document: &mut Document, step: &Step, id: usize) {
    let count = document.lessons().count();
    let fire = |lesson: &mut Lesson| {
        lesson.fire_count += 1;
        lesson.corrections.push(id.to_string());
    };
    match step {
        Step::Several(steps) => {
            for step in steps {
                take_step(document, step, id);
            }
        }
        Step::Add(description) => document.push(Lesson::with_defaults(
            "2026-05-01",
            State::Instinct,
            "CODE",
            &clean_description(description),
        )),
        _ if count == 0 => {}
        Step::Reinforce {
            at,
            description,
            state,
        } => {
            let lesson = document.lesson_mut(at % count).unwrap();
            fire(lesson);
            if let Some(description) = description {
                lesson.description = clean_description(description);
            }
            if let Some(state) = state {
                lesson.state = *state;
            }
        }
        Step::Kill(at) => document.lesson_mut(at % count).unwrap().state = State::Killed,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The cached document is always the parse of the file as written, line numbers and
    /// raw texts included, whatever the file and the changes; a read of an unchanged file
    /// is served from it, and every write lands in the file.
    #[test]
    fn the_cached_document_is_the_parse_of_the_file_written(
        text in file(),
        steps in prop::collection::vec(step(), 1..6),
    ) {
        let dir = brain_with(&text);
        let path = dir.path().join(LESSONS_FILE);
        let cache = DocumentCache::default();
        for (id, step) in steps.iter().enumerate() {
            let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
            let mut document = lock.read_cached(&path, &cache).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            prop_assert_eq!(&document, &Document::parse(&String::from_utf8_lossy(&bytes)).0);
            take_step(&mut document, step, id);
            let expected = document.render().unwrap();
            // A lesson the generator wrote may not be writable once changed; then nothing is.
            if lock.save_cached(&path, document, "2026-05-01T10:00:00Z", &cache).is_err() {
                prop_assert_eq!(std::fs::read(&path).unwrap(), bytes);
                continue;
            }
            let written = std::fs::read_to_string(&path).unwrap();
            prop_assert_eq!(&written, &expected.text);
            let last = cache.last.lock().unwrap();
            match (&*last, step) {
                (Some(known), _) => {
                    prop_assert_eq!(&known.bytes, written.as_bytes());
                    prop_assert_eq!(&known.document, &Document::parse(&written).0);
                }
                (None, Step::Kill(_)) => {}
                (None, _) => prop_assert!(false, "a save without a retired lesson left no cache"),
            }
        }
    }
}

#[test]
fn a_file_changed_by_another_writer_is_parsed_again_even_with_the_same_size_and_times() {
    let text = "[2026-04-02] [RULE:0.90] CODE: Use pathlib\n";
    let dir = brain_with(text);
    let path = dir.path().join(LESSONS_FILE);
    let cache = DocumentCache::default();
    let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
    let mut document = lock.read_cached(&path, &cache).unwrap();
    document.lesson_mut(0).unwrap().fire_count = 3;
    lock.save_cached(&path, document, "now", &cache).unwrap();
    drop(lock);
    assert!(cache.last.lock().unwrap().is_some());

    // The Python SDK rewrites the file in place: same inode, same size; the times are set
    // back to the ones our write left, as a write within one clock tick would.
    let ours = std::fs::read_to_string(&path).unwrap();
    let theirs = ours.replace("pathlib", "PATHLIB");
    assert_eq!(theirs.len(), ours.len());
    let times = std::fs::metadata(&path).unwrap();
    std::fs::write(&path, &theirs).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(
            std::fs::FileTimes::new()
                .set_accessed(times.accessed().unwrap())
                .set_modified(times.modified().unwrap()),
        )
        .unwrap();

    let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
    let document = lock.read_cached(&path, &cache).unwrap();
    assert_eq!(document, Document::parse(&theirs).0);
    assert_eq!(
        document.lessons().next().unwrap().description,
        "Use PATHLIB"
    );
}
