//! The page's fixed prose, one [`Notes`] per area: its title, how it is measured and what limits
//! the figure. The numbers of a run come from the results file; these texts carry what the lab
//! runs taught (the runs themselves are in git history of `docs/benchmarks.md`), so they change
//! only when a benchmark's method changes or a new profile says something else.

/// The fixed text of one area's section.
#[derive(Debug)]
pub(crate) struct Notes {
    pub(crate) area: &'static str,
    pub(crate) title: &'static str,
    pub(crate) method: &'static str,
    pub(crate) limits: &'static str,
}

/// The areas in page order.
pub(crate) const AREAS: &[Notes] = &[
    Notes {
        area: "capture",
        title: "Capture: events into the outbox",
        method: "\
The release binary runs as `gradata serve` on a passed loopback socket with the default \
`synchronous=full` and sync disabled, so only the API and the outbox are measured. `wrk` (one \
thread, keep-alive connections, a fresh data directory per run) posts single events and batches \
of 100 at each concurrency; after every run the outbox is counted, and every event `wrk` saw \
acknowledged must be in it. The limit is a trivial handler (read the body, answer 200) on the same \
HTTP stack and runtime under the same load. The original is the Python daemon 0.6.0 from PyPI on \
the routes it has (`POST /log-event`, `POST /correct`); it speaks HTTP/1.0 and closes every \
connection. So `wrk` opens a new connection for each of its requests: its rate counts the \
handshakes, and only 2xx answers; its latency, which `wrk` times from a request's first byte, \
leaves out connecting, which grows with the clients and at 256 is most of its wait (its listen \
backlog is 5; by Little's law its mean time per request, connecting included, is clients / \
rate). Each of its loads starts it on a fresh, empty brain and checks one answer first; `wrk`'s \
non-2xx answers and socket errors are counted per run (figure `errors`: a run with failures \
shows there, its rate counts none of them), and its event log must hold every request it \
acknowledged. Its runs are shorter (3 s), at the same concurrencies. The target on \
`POST /log-event` at 64 clients is 50 times the original's median in the same run. Memory under \
load is the loaded daemon's `VmRSS`, read every 20 ms during the 64-client single-event loads: \
the peak.",
        limits: "\
A request is acknowledged only after its group's commit is fsynced, and the clients of a group \
wait for that fsync together: each cycle is the group's HTTP work plus one `fdatasync` (about \
1 ms here, 0.1-10 ms, set by the disk), one after the other. Counted in one run: one fsync per \
24 requests, 34 `pwrite`s per commit. So events/s is about clients / (clients / the rate \
without fsync + the fsync time), `synchronous=full` runs at about half of `normal`, and the \
ratio to the trivial handler falls as the machine gets quieter (the handler speeds up, the \
fsync does not). Only work that overlaps the fsync would remove it from the cycle. The top CPU \
costs, about 20 µs a request: the store thread (a third: SQLite's VDBE, a quarter of it the \
row inserts; WAL frames; ext4 writeback inside `fdatasync`), hyper's `writev` of the response \
(a quarter: loopback TCP, including the delivery to `wrk`), context switches (a tenth), the \
hand-over to the store (4%); axum, JSON and the handler together 15%, no item above 2%. Tried \
and not kept, within this machine's run-to-run swing: flattened writes instead of `writev`, one \
runtime worker, renicing, real-time scheduling, commit delays, smaller pages, PGO.The \
original handles each request on a thread of its own behind one process-wide lock, and each \
event is its own SQLite transaction (after re-running its schema statements) plus a line \
appended to `events.jsonl`, with no group commit; `/correct` also runs its learning pipeline. \
So it answers tens of requests per second at any concurrency.",
    },
    Notes {
        area: "drain",
        title: "Drain: the outbox to the ingest API",
        method: "\
An outbox of 10^3 to 10^6 pending rows of about 300 bytes is filled through the store's enqueue \
and a copy of it drained, for each run, into a lean fake ingest server on loopback; the rate is \
the rows over the time of the drain alone, and the server must receive exactly one request per \
row. The limit posts the same payloads with the same HTTP client, 32 in flight (the engine's \
most) over keep-alive connections, with no store. The original is the Python daemon's loop \
re-created (peek 50, then one POST on a new connection and one commit per row), since 0.6.0 has \
no startup drain; it runs only at the sizes whose projected time fits a minute, so its line ends \
early. With 20 ms of added latency the bound is concurrency / latency: gradata and the original \
drain the same 800 rows, and gradata is held to the bound on 3,200. The 10^6-row drain is also \
run as an operator runs it (scenario `backlog`): `gradata drain`, the release binary, as a \
process of its own, timed from exec to exit, its `VmRSS` sampled every 50 ms.",
        limits: "\
The gap to the bare limit is the outbox: per row the writer leases the row and then settles it \
(the row rewritten twice, three index entries moved, the WAL frames of two commits) and the \
checkpointer copies those pages back, about 20-30 µs of CPU per row on the two cores that also \
run the client and the fake server. The default settings start at 4 requests in flight and add \
one per clean batch up to 32 (DESIGN §5), so short drains spend part of their time below full \
concurrency. The HTTP client is hyper's pooled client: reqwest's per-request layers cost more \
CPU than the request they carry.",
    },
    Notes {
        area: "startup",
        title: "Startup: exec to READY=1",
        method: "\
`gradata serve` is started with a notification socket of its own, and the time from exec to the \
`READY=1` datagram is taken, with an empty queue and with a backlog left by a previous run (the \
startup drain runs before `READY=1`), at no and at 5 ms of added ingest latency. The limit is \
the time to exec `/bin/true`, the floor for starting any process here. The original has no \
`READY=1`: its figure is the time until it answers its first request. A backlog is left as a \
previous run leaves it (the service started and stopped once on the directory, then the rows \
enqueued through the store) and copied for each start; sync goes to a fake ingest server on \
loopback, which counts the rows it has received when `READY=1` comes (`drained before ready`).",
        limits: "\
With an empty queue the floor is the exec itself, then opening `system.db` (creating it on a new \
data directory roughly doubles the time). With a backlog, the time is the startup drain: the \
drain's rate (see Drain) and, with added latency, concurrency / latency. The startup drain is \
bounded (`drain.max_rows`, 3,200 rows by default, and `drain.max_secs`, 30 s): above 3,200 rows \
the service reports ready after the first 3,200 and its worker sends the rest while it serves, so \
the time levels off there, as the rows received before `READY=1` show.",
    },
    Notes {
        area: "memory",
        title: "Memory: idle and under large bodies",
        method: "\
Idle: `VmRSS` one second after `READY=1`, with an empty queue and sync enabled (the original: \
one second after its first answer, on an empty brain directory). Under load: 400 clients each post a body of 1,000 \
events (about 0.94 MB) at once to `POST /v1/events`; every client must get a 2xx and every event \
must be in the outbox, then the peak (`VmHWM`) and the `VmRSS` a second after the last answer are \
read. The bodies held in memory are bounded by `api.max_buffered_body_bytes` (64 MiB). Under \
capture load (scenario `api`): the peak of `VmRSS` read every 20 ms during the 64-client loads, \
for gradata and for the original on the same routes.",
        limits: "\
The peak is about four times the room for bodies: a body is in memory as its text, then as its \
parsed events, then as the payloads the outbox stores, and the allocator keeps some of what is \
freed. A body waiting for room is not read at all and stays in the kernel's socket buffers, \
which the service's resident memory does not count. Idle, about 2 MiB is the service's own \
(the allocator's arena, relocated data, stacks); the rest is file-backed and shared: the \
binary's code as the kernel maps it from the page cache (7-8 MiB of its 9.5 MB of text, in \
64 KiB fault-around windows or whole large folios, though startup touches about 4.7 MiB), its \
read-only data and the C library. So the idle figure depends on the binary's size and layout \
more than on anything the service holds; compiling the start-up-only crates for size moved it \
by 0.2 MiB, within the noise.",
    },
    Notes {
        area: "brain",
        title: "Brain routes against 0.6.0",
        method: "\
The benchmark writes two brains deterministically (1,000 and 10,000 lessons in 0.6.0's grammar, \
and a correction index of 2,000 and 5,000 rows), copies each for both daemons and starts 0.6.0 \
(from PyPI, in a virtualenv under `target/`) and gradata on their own copies. Each route's \
answer must show its work (rules injected, violations found, context recalled, feedback \
detected) before it is loaded. `wrk` then loads 0.6.0 and gradata back to back, at 1 and 16 \
clients; latency ceilings at 16 clients are judged on a paced, open-loop run at ten times \
0.6.0's rate, latency counted from when each request was due.",
        limits: "\
A closed loop at 16 clients saturates the two cores `wrk` shares with the daemon, so its p99 is \
queueing (even `/tag-delta`, which reads nothing, reaches several ms). `/brain-recall` does the \
most work per request: FTS5's bm25 ranking, computed on an in-memory copy of the index. \
`/detect` commits and fsyncs an event per request; `/correct` prepares the lesson, commits two \
fsynced events and shares a rewrite of `lessons.md` with the corrections that arrive meanwhile. \
0.6.0 parses `lessons.md` on every request (150 ms at 10,000 lessons), serves one request at a \
time under one lock, and closes every connection.",
    },
    Notes {
        area: "soak",
        title: "Soak: bounded resources over time",
        method: "\
Six client threads drive a paced mixed load of about 1,400 events/s for 150 s (single events, \
batches, corrections, connections opened and dropped, scrapes of `/metrics` and `/health`) while \
the fake ingest server cycles through phases of about 6 s (a 24th of the run): healthy, 503, 500, \
slow, refused. Every 2 s the service's RSS, threads, descriptors and database sizes are sampled. \
At the end every acknowledged event must have reached the ingest server, no row may be dead and \
no request may have had a 5xx. It fails when the median of the last quarter of the load (at \
most a minute) exceeds the first quarter's by more than a stated margin.",
        limits: "\
RSS rises in the first seconds (the outbox, SQLite's page caches, the allocator warming up), \
once more by a few MiB around the first purge of delivered rows a minute in, and then stays \
flat. The corrections cycle through 1,000 distinct ones that all reinforce one lesson, so the \
brain learns only in the first 10 s and sees duplicates after: a lesson keeps the id of every \
correction that reinforced it (as 0.6.0 does) and `lessons.md` is rewritten whole for each, so \
13,000 distinct corrections into one lesson grew RSS by 2 to 2.5 KiB each for as long as they \
came (with the system allocator too), while the live heap grew by about 130 bytes each. The WAL \
sits at the writer's 32 MiB backstop and is cut back to 64 MiB when it is started over; \
`system.db` grows with the delivered rows kept for the retention window, so its size is \
reported, not judged. `/health` still counts delivered rows one index entry at a time.",
    },
    Notes {
        area: "outage",
        title: "Outage: large backlogs and a failing ingest",
        method: "\
Hundreds of thousands of rows are put in backoff behind an ingest server that fails; capture \
latency at 16 clients is compared with a healthy service on an empty queue (the limit), idle \
CPU and the requests sent into the failing server are counted, and then the server returns and \
the time until every row is delivered is taken.",
        limits: "\
While the ingest fails the worker only probes it (about once a second under load, once in 20 s \
when idle) instead of draining, so capture keeps its healthy latency and an idle service stays \
asleep. The recovery is a drain, limited as the \
Drain section says.",
    },
    Notes {
        area: "status",
        title: "Status: health and metrics at a million pending rows",
        method: "\
An outbox of 1,000,000 pending rows is written straight into the database, and `GET /health` \
and `GET /metrics` are timed one request at a time on a keep-alive connection, next to the same \
service on an empty outbox, in alternating rounds (nothing drains: no API key). Then what the \
counting triggers cost the writes: single-event enqueues through the store (64 callers) and \
single-event `POST /v1/events` under `wrk` (64 connections), with the triggers and, as the \
limit, on an outbox whose triggers were dropped, alternately in one run.",
        limits: "\
Status reads the counts the database's triggers keep and two index lookups, so its cost does \
not grow with the queue (it used to count the rows, about 0.4 s per million); what is left is \
the request's round trip on loopback. The triggers add a row update to every write's \
transaction, which shows under `synchronous=normal`, where the writer's CPU rather than the \
fsync sets the rate.",
    },
    Notes {
        area: "queue",
        title: "Queue: failing rows at the head, and a failing ingest at startup",
        method: "\
The service starts on 200 rows the fake ingest answers 500 ahead of 5,000 it takes, once with \
only the 200 retried before and once after a day-long outage (every row failed 1 to 8 times), \
and the startup drain's record (written before `READY=1`) is read: every good row must be \
delivered before `READY=1`. Then the same rows against an ingest that answers 500 to \
everything, and one that refuses connections: the startup drain must stop within three \
batches (150 rows tried).",
        limits: "\
Rows waiting on their backoff timers are not claimed, so a failing head does not hold back the \
rows behind it; a drain that makes no progress for three batches stops (`no_progress`), so an \
outage costs `READY=1` a few requests, not the startup budget.",
    },
    Notes {
        area: "retention",
        title: "Retention: purging a million synced rows under load",
        method: "\
The service, under a 30 s watchdog it must feed, purges 1,000,000 synced rows past their \
retention while a probe posts single events at 100 requests a second on one keep-alive \
connection, each latency counted from when its request was due. The probe's latencies before \
the purge starts are the limit; those during the purge must have a p99.9 within twice theirs \
and no request over 250 ms, every expired row must be deleted and the watchdog fed throughout.",
        limits: "\
The purge deletes in steps of a bounded number of rows, one transaction each through the \
store's writer, and rests between steps as long as the last one took: a write waits at most one \
step, and the purge takes at most half the writer's time. It runs apart from the watchdog's \
task, so a long purge does not starve it.",
    },
];

/// The notes of an area, if the page has any.
pub(crate) fn of(area: &str) -> Option<&'static Notes> {
    AREAS.iter().find(|notes| notes.area == area)
}

/// A figure the headline table shows: the measurement's area, scenario and figure, and the
/// params it must have, each as the page prints it (`rows` `3,200`). Every other target is
/// judged in its area's section, so the headline stays short enough to read in a minute.
#[derive(Debug)]
pub(crate) struct Featured {
    pub(crate) area: &'static str,
    pub(crate) scenario: &'static str,
    pub(crate) figure: &'static str,
    pub(crate) params: &'static [(&'static str, &'static str)],
}

const fn featured(
    area: &'static str,
    scenario: &'static str,
    figure: &'static str,
    params: &'static [(&'static str, &'static str)],
) -> Featured {
    Featured {
        area,
        scenario,
        figure,
        params,
    }
}

/// The headline's figures, in its order: what a user deciding to install gradata, or an engineer
/// checking a change, looks at first.
pub(crate) const HEADLINE: &[Featured] = &[
    featured(
        "capture",
        "api",
        "throughput",
        &[("route", "/v1/events"), ("batch", "1"), ("clients", "64")],
    ),
    featured(
        "capture",
        "api",
        "p99",
        &[("route", "/v1/events"), ("batch", "1"), ("clients", "64")],
    ),
    featured(
        "capture",
        "api",
        "throughput",
        &[("route", "/log-event"), ("clients", "64")],
    ),
    featured(
        "capture",
        "api",
        "throughput",
        &[("batch", "100"), ("clients", "64")],
    ),
    featured("drain", "drain", "throughput", &[("latency_ms", "0")]),
    featured("drain", "drain", "throughput", &[("latency_ms", "20")]),
    featured("drain", "backlog", "time", &[]),
    featured("drain", "backlog", "peak rss", &[]),
    featured(
        "startup",
        "startup",
        "ready",
        &[("rows", "0"), ("latency_ms", "0")],
    ),
    featured("memory", "startup", "rss", &[("state", "idle")]),
    featured(
        "brain",
        "brain",
        "throughput",
        &[("lessons", "10,000"), ("route", "/apply-rules")],
    ),
    featured(
        "brain",
        "brain",
        "p99",
        &[
            ("clients", "16"),
            ("lessons", "10,000"),
            ("route", "/correct"),
        ],
    ),
    featured("outage", "outage", "recovery", &[]),
    featured("soak", "soak", "lost", &[]),
    featured("soak", "soak", "rss growth", &[]),
];
