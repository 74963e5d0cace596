//! Round trips of every protocol line, and garbage refused.

use wire::UserId;

use super::*;

fn chat() -> ChatId {
    ChatId::group(0x1234_5678_9abc_def0_1122_3344_5566_7788)
}

fn set(text: &str) -> RangeSet {
    RangeSet::parse(text).expect("valid set")
}

#[test]
fn every_line_round_trips() {
    let direct = ChatId::direct(UserId::new(3).expect("id"), UserId::new(9).expect("id"));
    let faults = Faults {
        delivered: 9,
        lost: 1,
        dup: 2,
        order: 3,
        phantom: 4,
        redelivered: 5,
    };
    let lines = [
        WorkerLine::Ready,
        WorkerLine::Connected { ok: 5, failed: 1 },
        WorkerLine::Fail {
            count: 2,
            reason: "connect: refused (os error 111)".into(),
        },
        WorkerLine::Chat {
            group: 7,
            id: chat(),
        },
        WorkerLine::SetupDone,
        WorkerLine::Tick(Tick {
            second: 3,
            conns: 10,
            sends: 100,
            deliveries: 300,
            errors: 0,
            e2e: "-".into(),
            sent: "HISTx+/=".into(),
        }),
        WorkerLine::Drained,
        WorkerLine::Hist {
            name: "e2e".into(),
            hist: "abc=".into(),
        },
        WorkerLine::Count {
            name: "sends".into(),
            value: 12,
        },
        WorkerLine::Acked {
            device: 4,
            chat: direct,
            acked: set("1-10,12"),
            maybe: set("-"),
        },
        WorkerLine::Storm {
            event: 0,
            devices: 100,
            synced_us: 1_500_000,
        },
        WorkerLine::Final,
        WorkerLine::Ledger {
            chat: Some(chat()),
            faults,
        },
        WorkerLine::Ledger { chat: None, faults },
        WorkerLine::Checked,
    ];
    for line in lines {
        let text = line.to_string();
        assert!(!text.contains('\n'));
        assert_eq!(WorkerLine::parse(&text).expect(&text), line, "{text}");
    }
    let commands = [
        Command::Connect,
        Command::Setup,
        Command::Chat {
            group: 1,
            id: chat(),
        },
        Command::Go { t0_ns: 123 },
        Command::Finish,
        Command::Expect {
            device: 1,
            chat: direct,
            acked: set("1-3"),
            maybe: set("4"),
        },
        Command::Check,
    ];
    for c in commands {
        let text = c.to_string();
        assert_eq!(Command::parse(&text).expect(&text), c, "{text}");
    }
}

#[test]
fn rejects_garbage() {
    for bad in [
        "",
        "hello",
        "connected 1",
        "chat 1 xyz",
        "tick 1 2 3",
        "ready now",
    ] {
        assert!(
            WorkerLine::parse(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
    for bad in ["", "go", "go x", "expect 1", "chat 1 00"] {
        assert!(Command::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}
