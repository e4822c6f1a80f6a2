//! Commands that change machines: `start`, `stop`, `restart`, `kill` and
//! `rm`. Each holds the machine's lock while it works; several machines are
//! handled concurrently, and every failure is reported.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::Context as _;
use machine_proto::v1;

use crate::context::Context;
use crate::machine::{self, Target, names_or_default, state_name};
use crate::store::StoreError;
use crate::ui;

/// A lifecycle operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
    Restart,
    Kill,
}

impl Op {
    fn rpc(self) -> &'static str {
        match self {
            Op::Start => "Start",
            Op::Stop => "Stop",
            Op::Restart => "Restart",
            Op::Kill => "Kill",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
            Op::Kill => "kill",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Op::Start => "started",
            Op::Stop => "stopped",
            Op::Restart => "restarted",
            Op::Kill => "killed",
        }
    }
}

/// Runs `op` on every machine named (or `default`).
pub async fn run(ctx: &Context, op: Op, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let names = names_or_default(names);
    let results = futures_util::future::join_all(names.iter().map(|n| one(ctx, op, n))).await;
    finish(results)
}

fn finish(results: Vec<anyhow::Result<()>>) -> anyhow::Result<ExitCode> {
    let total = results.len();
    let failed: Vec<anyhow::Error> = results.into_iter().filter_map(Result::err).collect();
    match failed.len() {
        0 => Ok(ExitCode::SUCCESS),
        1 if total == 1 => Err(failed.into_iter().next().expect("one")),
        n => {
            for e in &failed {
                ui::error(&format!("{e:#}"));
            }
            anyhow::bail!("{n} of {total} machines failed")
        }
    }
}

async fn one(ctx: &Context, op: Op, name: &str) -> anyhow::Result<()> {
    let _lock = match ctx.store.lock(name).await {
        Err(StoreError::NotFound(_)) => return Err(StoreError::NotFound(name.to_owned()).into()),
        other => other?,
    };
    let mut t = machine::load(ctx, name)?;
    let driver = t.driver(ctx).await?;
    let cap = match op {
        Op::Start => v1::Capability::Start,
        Op::Stop => v1::Capability::Stop,
        Op::Restart => v1::Capability::Restart,
        Op::Kill => v1::Capability::Kill,
    };
    if !driver.has(cap) {
        anyhow::bail!(
            "cannot {} machine `{name}`: driver `{}` does not support {}",
            op.verb(),
            driver.name,
            match op {
                Op::Start => "starting machines",
                Op::Stop => "stopping machines",
                Op::Restart => "restarting machines",
                Op::Kill => "killing machines",
            }
        );
    }
    let state = t.state(&driver, driver.call_timeout()).await?.state();
    match (op, state) {
        (Op::Start, v1::State::Running) => {
            anyhow::bail!("machine `{name}` is already running")
        }
        (Op::Stop | Op::Kill, v1::State::Stopped) => {
            anyhow::bail!("machine `{name}` is already stopped")
        }
        (_, v1::State::NotFound) => anyhow::bail!(
            "driver `{}` has no host for machine `{name}` (state: {}); was it removed outside machine?\n  hint: `machine rm -f {name}` removes the entry",
            driver.name,
            state_name(state)
        ),
        _ => {}
    }
    let what = || format!("cannot {} machine `{name}`", op.verb());
    let req = t.request();
    let mut client = driver.client();
    let timeout = driver
        .call_timeout()
        .max(std::time::Duration::from_secs(300));
    let resp = match op {
        Op::Start => {
            driver
                .call(op.rpc(), what, timeout, client.start(req))
                .await?
        }
        Op::Stop => {
            driver
                .call(op.rpc(), what, timeout, client.stop(req))
                .await?
        }
        Op::Restart => {
            driver
                .call(op.rpc(), what, timeout, client.restart(req))
                .await?
        }
        Op::Kill => {
            driver
                .call(op.rpc(), what, timeout, client.kill(req))
                .await?
        }
    };
    if let Some(config) = resp.config_json {
        t.record.set_driver_config(&config)?;
        ctx.store.save(&t.record)?;
    }
    ui::info(&format!("Machine `{name}` was {}.", op.done()));
    if matches!(op, Op::Start | Op::Restart) && t.has_certs() {
        // A started machine is usable when Docker answers, not when the
        // provider says "running": wait for it, as provisioning does.
        let started = std::time::Instant::now();
        let conn = t.connection(&driver, driver.call_timeout()).await?;
        if let Err(e) = t.check_certificate(&conn) {
            ui::warn(&format!("{e:#}"));
            return Ok(());
        }
        ui::step(&format!("Waiting for Docker at {}", conn.docker_url));
        crate::docker_api::wait_ready(&conn.docker_url, &t.dir, crate::provision::DOCKER_WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("machine `{name}` started, but Docker did not answer"))?;
        ui::done("Docker answers", started.elapsed());
    }
    Ok(())
}

/// `machine rm`.
pub async fn rm(
    ctx: &Context,
    names: Vec<String>,
    force: bool,
    yes: bool,
) -> anyhow::Result<ExitCode> {
    if !yes && !confirm(&names)? {
        anyhow::bail!("removal cancelled");
    }
    let results = futures_util::future::join_all(names.iter().map(|n| remove(ctx, n, force))).await;
    finish(results)
}

fn confirm(names: &[String]) -> anyhow::Result<bool> {
    ui::info(&format!(
        "About to remove {}\nWARNING: This action will delete both local reference and remote instance.",
        names.join(", ")
    ));
    eprint!("Are you sure? (y/n): ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

async fn remove(ctx: &Context, name: &str, force: bool) -> anyhow::Result<()> {
    if !ctx.store.exists(name) {
        return Err(StoreError::NotFound(name.to_owned()).into());
    }
    let _lock = ctx.store.lock(name).await?;
    match driver_remove(ctx, name).await {
        Ok(()) => {}
        Err(e) if force => ui::warn(&format!(
            "{e:#}\n  removing the local entry of `{name}` anyway (--force)"
        )),
        Err(e) => {
            return Err(e.context(format!(
                "machine `{name}` was not removed\n  hint: `machine rm -f {name}` removes the local entry even so"
            )));
        }
    }
    ctx.store.remove(name)?;
    ui::info(&format!("Successfully removed {name}"));
    Ok(())
}

/// Asks the driver to remove the host.
async fn driver_remove(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let t = Target::load(ctx, name)?;
    if t.record.driver_config.is_null() && t.record.phase != crate::store::Phase::Ready {
        // The driver never returned a config; there may still be something
        // at the provider, so it is asked all the same.
        tracing::debug!(
            machine = name,
            "removing a machine whose create did not finish"
        );
    }
    let driver = t.driver(ctx).await?;
    driver
        .call(
            "Remove",
            || format!("driver `{}` could not remove machine `{name}`", driver.name),
            driver
                .call_timeout()
                .max(std::time::Duration::from_secs(300)),
            driver.client().remove(t.request()),
        )
        .await?;
    Ok(())
}
