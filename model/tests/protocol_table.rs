//! PROTOCOL.md's refusal table and the model must say the same thing.
//!
//! Every row of the table (`| situation | errno |`) is matched to a
//! scenario below by the start of its text; the scenario runs on the model
//! and must give the row's errno. A row without a scenario, a scenario
//! without a row, or a different errno fails the test. The rows are in
//! precedence order, and some scenarios check that too (a situation where
//! an earlier row also applies gives the earlier row's errno).

use kern2usr_abi::{param, EventMode};
use kern2usr_model::{Errno, Model, Pid};

const L: Pid = 100;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The rows of the table whose header is `| situation | errno |`.
fn table_rows(doc: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut lines = doc
        .lines()
        .skip_while(|l| l.trim() != "| situation | errno |");
    assert!(
        lines.next().is_some(),
        "PROTOCOL.md has no `| situation | errno |` table"
    );
    for line in lines.skip(1) {
        let line = line.trim();
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line
            .trim_matches('|')
            .rsplitn(2, '|')
            .map(str::trim)
            .collect();
        assert_eq!(cells.len(), 2, "row {line:?} has not two cells");
        rows.push((cells[1].to_owned(), cells[0].to_owned()));
    }
    rows
}

fn world(mode: EventMode) -> Model {
    let mut m = Model::new(mode, false);
    assert_eq!(m.insmod(), Ok(()));
    m.spawn(L);
    m.new_eventfd(L, 3);
    m.new_eventfd(L, 4);
    m.open_other(L, 5);
    m
}

fn w(m: &mut Model, name: &str, text: &str) -> Result<(), Errno> {
    m.param_write(name, format!("{text}\n").as_bytes())
}

fn cmd(m: &mut Model, c: u32) -> Result<(), Errno> {
    w(m, param::CUR_CMD, &c.to_string())
}

fn find(m: &mut Model, pid: Pid, fd1: i32, fd2: i32) -> Result<(), Errno> {
    w(m, param::USR_PID, &pid.to_string()).expect("usr_pid");
    w(m, param::USR_EFD, &fd1.to_string()).expect("usr_efd");
    w(m, param::USR_EFD2, &fd2.to_string()).expect("usr_efd2");
    cmd(m, 1)
}

fn attached(mode: EventMode) -> Model {
    let mut m = world(mode);
    assert_eq!(find(&mut m, L, 3, 4), Ok(()));
    m
}

fn testing(mode: EventMode) -> Model {
    let mut m = attached(mode);
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    m
}

/// All results of a scenario must be the same errno; returns it.
fn same(results: &[Result<(), Errno>]) -> Option<Errno> {
    let first = results.first()?.err()?;
    results.iter().all(|r| *r == Err(first)).then_some(first)
}

/// What a row's scenario gave.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The row cannot happen in the model.
    NotModelled,
    /// All its cases gave this errno (None: they disagree, or one passed).
    Gives(Option<Errno>),
}

/// The scenario of a row (by the start of its text), run in both modes
/// where both apply.
fn scenario(row: &str) -> Option<Outcome> {
    use EventMode::{Counter, Queue};
    let both = [Counter, Queue];
    let r = if row.starts_with("no number at all") {
        let mut m = world(Queue);
        let texts = ["abc", "-1", " 1", "1 ", "4294967296", "0x", "1\n"];
        same(
            &texts
                .iter()
                .map(|t| w(&mut m, param::CUR_CMD, t))
                .collect::<Vec<_>>(),
        )
    } else if row.starts_with("value not 1-5") {
        let mut m = world(Queue);
        same(&[0, 6, 7, 9, u32::MAX].map(|c| cmd(&mut m, c)))
    } else if row.starts_with("FIND with usr_pid <= 0") {
        let mut m = world(Queue);
        let defaults = cmd(&mut m, 1);
        w(&mut m, param::USR_PID, &L.to_string()).expect("usr_pid");
        same(&[defaults, cmd(&mut m, 1)])
    } else if row.starts_with("FIND: usr_efd == usr_efd2") {
        // Also while testing: this row comes first.
        let mut t = testing(Queue);
        same(&[find(&mut world(Queue), L, 3, 3), find(&mut t, L, 4, 4)])
    } else if row.starts_with("FIND while the test is running") {
        // Before ESRCH and EBADF.
        let results: Vec<_> = both
            .iter()
            .flat_map(|&mode| {
                [
                    find(&mut testing(mode), L, 3, 4),
                    find(&mut testing(mode), 99_999, 3, 4),
                    find(&mut testing(mode), L, 3, 9),
                ]
            })
            .collect();
        same(&results)
    } else if row.starts_with("FIND: the writer may not reach") {
        // The module's writer is root (CAP_SYS_PTRACE): not modelled.
        return Some(Outcome::NotModelled);
    } else if row.starts_with("FIND: usr_pid is no process") {
        let mut m = world(Queue);
        m.spawn(200);
        m.exit(200);
        same(&[
            find(&mut world(Queue), 99_999, 3, 4),
            find(&mut m, 200, 3, 4),
        ])
    } else if row.starts_with("FIND: an fd is not open") {
        same(&[
            find(&mut world(Queue), L, 9, 4),
            find(&mut world(Queue), L, 3, 9),
            // Before "not an eventfd".
            find(&mut world(Queue), L, 5, 9),
        ])
    } else if row.starts_with("FIND: an fd is open but not an eventfd") {
        same(&[
            find(&mut world(Queue), L, 5, 4),
            find(&mut world(Queue), L, 3, 0),
        ])
    } else if row.starts_with("FIND: the two fds are the same eventfd") {
        let mut m = world(Queue);
        m.dup_fd(L, 3, 6);
        let mut r = world(Queue);
        r.dup_fd(L, 3, 6);
        assert_eq!(r.open_device(L, 7), Ok(()));
        same(&[find(&mut m, L, 3, 6), r.ioctl_register(L, 6, 3)])
    } else if row.starts_with("FIND / REGISTER would replace") {
        let results: Vec<_> = both
            .iter()
            .flat_map(|&mode| {
                let mut m = attached(mode);
                m.new_eventfd(L, 6);
                assert_eq!(m.open_device(L, 7), Ok(()));
                assert_eq!(cmd(&mut m, 2), Ok(()));
                [find(&mut m, L, 6, 4), m.ioctl_register(L, 3, 6)]
            })
            .collect();
        same(&results)
    } else if row.starts_with("FIND / REGISTER in counter mode") {
        let mut m = world(Counter);
        let e = m.new_eventfd(L, 6);
        m.efd_write(e, 2);
        assert_eq!(m.open_device(L, 7), Ok(()));
        same(&[find(&mut m, L, 6, 4), m.ioctl_register(L, 6, 4)])
    } else if row.starts_with("2, 3, 4 or 5 before a successful FIND") {
        let mut m = world(Queue);
        let mut gone = attached(Counter);
        gone.exit(L);
        let mut r: Vec<_> = (2..=5).map(|c| cmd(&mut m, c)).collect();
        r.push(cmd(&mut gone, 2));
        same(&r)
    } else if row.starts_with("2, 3, 4 or 5 after EXIT_TEST") {
        let mut m = attached(Queue);
        assert_eq!(cmd(&mut m, 5), Ok(()));
        same(&(2..=5).map(|c| cmd(&mut m, c)).collect::<Vec<_>>())
    } else if row.starts_with("2 while the test is running") {
        same(&both.map(|mode| cmd(&mut testing(mode), 2)))
    } else if row.starts_with("3 before 2") {
        same(&both.map(|mode| cmd(&mut attached(mode), 3)))
    } else if row.starts_with("3 while the test is running") {
        same(&both.map(|mode| cmd(&mut testing(mode), 3)))
    } else if row.starts_with("4 while the test is not running") {
        let mut stopped = testing(Queue);
        assert_eq!(cmd(&mut stopped, 4), Ok(()));
        same(&[cmd(&mut attached(Counter), 4), cmd(&mut stopped, 4)])
    } else if row.starts_with("event queue full") {
        let results: Vec<_> = both
            .iter()
            .flat_map(|&mode| {
                let mut m = attached(mode);
                while cmd(&mut m, 2).is_ok() {}
                let mmap = cmd(&mut m, 2);
                let start = cmd(&mut m, 3);
                assert_eq!(cmd(&mut m, 5), Ok(()), "EXIT fits in the reserve");
                // Before "2 while the test is running": room comes first.
                let mut t = attached(mode);
                while (t.queue().len() as u32) < kern2usr_abi::EVENT_QUEUE_LEN - 3 {
                    assert_eq!(cmd(&mut t, 2), Ok(()));
                }
                assert_eq!(cmd(&mut t, 3), Ok(()));
                [mmap, start, cmd(&mut t, 2)]
            })
            .collect();
        same(&results)
    } else {
        return None;
    };
    Some(Outcome::Gives(r))
}

#[test]
fn every_row_of_the_refusal_table_holds_in_the_model() {
    let doc = doc();
    let rows = table_rows(&doc);
    assert!(rows.len() >= 15, "only {} rows parsed", rows.len());
    let mut problems = Vec::new();
    for (situation, errno) in &rows {
        let Some(want) = Errno::from_name(errno) else {
            problems.push(format!("row {situation:?}: unknown errno {errno:?}"));
            continue;
        };
        match scenario(situation) {
            None => problems.push(format!("row {situation:?} has no scenario")),
            Some(Outcome::NotModelled) => {}
            Some(Outcome::Gives(Some(got))) if got == want => {}
            Some(Outcome::Gives(got)) => problems.push(format!(
                "row {situation:?}: the doc says {errno}, the model gives {got:?}"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_row_without_a_scenario_is_noticed() {
    assert!(scenario("a situation nobody wrote down").is_none());
    // And a disagreeing model would be: this row's errno is EINVAL.
    assert_eq!(
        scenario("3 before 2"),
        Some(Outcome::Gives(Some(Errno::EPROTO)))
    );
    // Cases that disagree are a problem, not a pass.
    assert_eq!(same(&[Err(Errno::EINVAL), Ok(())]), None);
    assert_eq!(same(&[Err(Errno::EINVAL), Err(Errno::EBUSY)]), None);
}

#[test]
fn the_ioctl_table_names_the_model_errnos() {
    let doc = doc();
    let row = |name: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| `{name}` ")))
            .unwrap_or_else(|| panic!("no ioctl row for {name}"))
            .to_owned()
    };
    // K2U_IOC_ACK: EPROTO with no round, ESTALE when not shown yet.
    let ack = row("K2U_IOC_ACK");
    assert!(ack.contains("EPROTO when none is outstanding") && ack.contains("ESTALE"));
    let mut m = attached(EventMode::Queue);
    assert_eq!(m.ioctl_ack(), Err(Errno::EPROTO));
    assert_eq!(cmd(&mut m, 2), Ok(()));
    assert_eq!(cmd(&mut m, 3), Ok(()));
    assert_eq!(m.publish(), Ok(()));
    assert_eq!(m.ioctl_ack(), Err(Errno::ESTALE));
    // K2U_IOC_ACK_ROUND: ESTALE for another round, EPROTO with none.
    let ack_round = row("K2U_IOC_ACK_ROUND");
    assert!(ack_round.contains("ESTALE when another round") && ack_round.contains("EPROTO"));
    assert_eq!(m.ioctl_ack_round(2), Err(Errno::ESTALE));
    assert_eq!(m.ioctl_ack_round(1), Ok(()));
    assert_eq!(m.ioctl_ack_round(1), Err(Errno::EPROTO));
}
