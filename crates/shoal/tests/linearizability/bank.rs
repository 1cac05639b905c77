//! Jepsen's bank workload over RESP transactions: clients move money between accounts
//! with WATCH/MULTI/EXEC while others read every balance, under the nemesis. Transfers keep
//! the total; a read that sees another total (a transfer half applied, or read half
//! before and half after one) or a negative balance (a transfer that ignored a concurrent
//! one) is a violation. Reads use both plain MGET and MGET inside MULTI/EXEC.

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::*;

/// Accounts, all in one shard (one hash tag), as a transaction needs.
const ACCOUNTS: usize = 5;
const OPENING_BALANCE: i64 = 100;
const TOTAL: i64 = ACCOUNTS as i64 * OPENING_BALANCE;

fn account(i: usize) -> String {
    format!("{{bank}}acct-{i}")
}

fn all_accounts() -> Vec<String> {
    (0..ACCOUNTS).map(account).collect()
}

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    transfers: usize,
    conflicts: usize,
    reads: usize,
    failed: usize,
    /// Reads whose balances broke an invariant, with how they were read.
    violations: Vec<String>,
}

/// Checks one read of every balance.
fn check_balances(balances: &[Option<i64>]) -> Result<(), String> {
    let values: Vec<i64> = balances.iter().map(|b| b.unwrap_or(0)).collect();
    let total: i64 = values.iter().sum();
    if total != TOTAL || values.iter().any(|b| *b < 0) {
        return Err(format!("balances {values:?} sum to {total}, not {TOTAL}"));
    }
    Ok(())
}

fn balances_of(value: Value) -> Result<Vec<Option<i64>>, String> {
    redis::from_redis_value(&value).map_err(|e| format!("not balances: {value:?}: {e}"))
}

/// One transfer of up to 10 from `from` to `to`, guarded by WATCH so a balance never goes
/// below zero. `Ok(true)` if it applied, `Ok(false)` if a concurrent write made EXEC
/// abort or the balance was too low.
async fn transfer(
    con: &mut MultiplexedConnection,
    from: &str,
    to: &str,
    amount: i64,
) -> redis::RedisResult<bool> {
    redis::cmd("WATCH").arg(from).query_async::<()>(con).await?;
    let balance: Option<i64> = redis::cmd("GET").arg(from).query_async(con).await?;
    if balance.unwrap_or(0) < amount {
        redis::cmd("UNWATCH").query_async::<()>(con).await?;
        return Ok(false);
    }
    let applied: Option<(i64, i64)> = redis::pipe()
        .atomic()
        .cmd("DECRBY")
        .arg(from)
        .arg(amount)
        .cmd("INCRBY")
        .arg(to)
        .arg(amount)
        .query_async(con)
        .await?;
    Ok(applied.is_some())
}

async fn read_all(
    con: &mut MultiplexedConnection,
    in_transaction: bool,
) -> redis::RedisResult<Value> {
    let keys = all_accounts();
    if in_transaction {
        let (balances,): (Value,) = redis::pipe()
            .atomic()
            .cmd("MGET")
            .arg(&keys)
            .query_async(con)
            .await?;
        Ok(balances)
    } else {
        redis::cmd("MGET").arg(&keys).query_async(con).await
    }
}

async fn bank_client(
    urls: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<std::sync::Mutex<Ledger>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let Some((url, mut con)) = connect_to_any(&urls, &mut rng).await else {
            continue;
        };
        for _ in 0..20 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let roll = rng.random_range(0..4);
            if roll < 2 {
                let from = rng.random_range(0..ACCOUNTS);
                let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                let amount = rng.random_range(1..=10);
                let outcome = transfer(&mut con, &account(from), &account(to), amount).await;
                let mut ledger = ledger.lock().expect("ledger");
                match outcome {
                    Ok(true) => ledger.transfers += 1,
                    Ok(false) => ledger.conflicts += 1,
                    Err(_) => {
                        // The connection may be left inside MULTI or WATCH: start over.
                        ledger.failed += 1;
                        break;
                    }
                }
            } else {
                let in_transaction = roll == 3;
                let how = if in_transaction {
                    "MULTI/MGET/EXEC"
                } else {
                    "MGET"
                };
                let outcome = read_all(&mut con, in_transaction).await;
                let mut ledger = ledger.lock().expect("ledger");
                match outcome.map_err(|e| e.to_string()).and_then(balances_of) {
                    Ok(balances) => {
                        ledger.reads += 1;
                        if let Err(e) = check_balances(&balances) {
                            ledger.violations.push(format!("{how} via {url}: {e}"));
                        }
                    }
                    Err(_) => {
                        ledger.failed += 1;
                        break;
                    }
                }
            }
        }
    }
}

pub(crate) async fn bank_run(nodes: usize, seed: u64, net: Net) -> Summary {
    eprintln!("bank run: {nodes} nodes, seed {seed} (replay with SHOAL_SEED={seed})");
    let mut cluster = start_cluster(nodes, net).await;
    {
        let mut con = cluster.resp(cluster.ids()[0]).await;
        let mut open = redis::cmd("MSET");
        for key in all_accounts() {
            open.arg(key).arg(OPENING_BALANCE);
        }
        open.query_async::<()>(&mut con)
            .await
            .expect("open the accounts");
    }
    let urls: Vec<String> = cluster
        .ids()
        .iter()
        .map(|id| cluster.resp_url(*id))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(std::sync::Mutex::new(Ledger::default()));
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            tokio::spawn(bank_client(
                urls.clone(),
                seed ^ (c << 40) ^ 0xba4c,
                stop.clone(),
                ledger.clone(),
            ))
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut schedule = Vec::new();
    for step in 0..STEPS {
        schedule.push(nemesis_step(&mut cluster, &mut rng, step).await);
    }
    // Never vacuous: a transfer and a read after the faults at least.
    let before = {
        let ledger = ledger.lock().expect("ledger");
        (ledger.transfers, ledger.reads)
    };
    harness::poll_until(
        &format!("seed {seed}: a transfer and a read after the faults"),
        harness::LEADER_TIMEOUT,
        || async {
            let ledger = ledger.lock().expect("ledger");
            if ledger.transfers > before.0 && ledger.reads > before.1 {
                Ok(())
            } else {
                Err(format!(
                    "{} transfers, {} reads",
                    ledger.transfers, ledger.reads
                ))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("bank client");
    }
    cluster.wait_for_leaders(1).await;
    let mut ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    for id in cluster.ids() {
        let mut con = cluster.resp(id).await;
        for in_transaction in [false, true] {
            let read = read_all(&mut con, in_transaction)
                .await
                .map_err(|e| e.to_string())
                .and_then(balances_of)
                .unwrap_or_else(|e| panic!("seed {seed}: final read via node {id}: {e}"));
            if let Err(e) = check_balances(&read) {
                ledger
                    .violations
                    .push(format!("final read via node {id}: {e}"));
            }
        }
    }
    let summary = Summary {
        workload: "bank",
        nodes,
        seed,
        schedule,
        ok: ledger.transfers + ledger.reads,
        failed: ledger.failed,
        unknown: 0,
        verdict: match ledger.violations.first() {
            None => Ok(()),
            Some(first) => Err(format!(
                "{} reads broke the invariant, first: {first}",
                ledger.violations.len()
            )),
        },
    };
    eprintln!(
        "bank seed {seed}: {} transfers, {} aborted by WATCH or short of funds, {} reads",
        ledger.transfers, ledger.conflicts, ledger.reads
    );
    summary.print();
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_keep_the_total_under_faults() {
    for seed in seeds(601, 2) {
        bank_run(3, seed, Net::Transport).await.assert_correct();
    }
}
