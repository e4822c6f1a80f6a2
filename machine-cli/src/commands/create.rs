//! `machine create`: the driver makes the host; the store records it.
//!
//! Order matters for what a failure leaves behind: everything that can be
//! checked before the driver creates anything (name, driver, flags, the
//! driver's pre-create check) is, and a failure there leaves no trace. A
//! failure once the driver has started creating leaves the machine in the
//! `failed` phase with what went wrong, and `machine rm` cleans it up.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use machine_proto::v1::{self, create_event::Event};

use crate::cli::CreateArgs;
use crate::context::Context;
use crate::store::{self, EngineOptions, Phase};
use crate::ui;

/// The driver's create flags, for the command line.
pub async fn driver_flags(ctx: &Context, driver: &str) -> anyhow::Result<Vec<v1::Flag>> {
    let d = ctx
        .host
        .get(driver)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let flags = d
        .call(
            "GetCreateFlags",
            || format!("driver `{driver}` could not list its create flags"),
            d.call_timeout(),
            d.client().get_create_flags(v1::GetCreateFlagsRequest {}),
        )
        .await?;
    Ok(flags.flags)
}

fn engine_options(args: &CreateArgs) -> EngineOptions {
    EngineOptions {
        opts: args.engine_opts.clone(),
        labels: args.engine_labels.clone(),
        env: args.engine_env.clone(),
        insecure_registries: args.engine_insecure_registries.clone(),
        registry_mirrors: args.engine_registry_mirrors.clone(),
        storage_driver: args.engine_storage_driver.clone().unwrap_or_default(),
        install_url: args.engine_install_url.clone(),
        install_method: args.engine_install_method.as_str().to_owned(),
        tls_san: args.tls_san.clone(),
    }
}

pub async fn run(
    ctx: &Context,
    args: CreateArgs,
    flags: HashMap<String, v1::FlagValue>,
) -> anyhow::Result<ExitCode> {
    let name = args.name.clone();
    if !store::valid_name(&name) {
        return Err(store::StoreError::InvalidName(name).into());
    }
    let started = Instant::now();
    let driver = ctx
        .host
        .get(&args.driver)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let (mut record, _lock) = ctx.store.reserve(&name, &driver.name)?;
    record.engine = engine_options(&args);
    let dir = ctx.store.machine_dir(&name);
    // The machine's own key; drivers that make hosts install its public half.
    let key_path = dir.join("id_ed25519");
    let public_key = match crate::ssh::generate_key(&key_path, &format!("machine-{name}")) {
        Ok(k) => k,
        Err(e) => {
            ctx.store.remove(&name)?;
            return Err(anyhow::Error::from(e)
                .context(format!("cannot make an SSH key for machine `{name}`")));
        }
    };
    let request = v1::CreateRequest {
        machine: Some(v1::Machine {
            name: name.clone(),
            dir: dir.to_string_lossy().into_owned(),
            config_json: String::new(),
        }),
        flags,
        ssh_public_key: public_key,
        ssh_private_key_path: key_path.to_string_lossy().into_owned(),
    };

    // Nothing exists at the provider yet: a failure here removes the entry.
    let checked = driver
        .call(
            "PreCreateCheck",
            || {
                format!(
                    "driver `{}` refused to create machine `{name}`",
                    driver.name
                )
            },
            driver.call_timeout(),
            driver.client().pre_create_check(request.clone()),
        )
        .await;
    let warnings = match checked {
        Ok(r) => r.warnings,
        Err(e) => {
            ctx.store.remove(&name)?;
            return Err(e.into());
        }
    };
    for w in warnings {
        ui::warn(&w);
    }

    ui::step(&format!(
        "Creating machine `{name}` with driver `{}`",
        driver.name
    ));
    let created = create_on_driver(&driver, request).await.and_then(|config| {
        record.set_driver_config(&config).map_err(|e| {
            anyhow::anyhow!(
                "driver `{}` returned a config that is not JSON: {e}",
                driver.name
            )
        })
    });
    match created {
        Ok(()) => {}
        Err(e) => {
            record.phase = Phase::Failed;
            record.error = Some(format!("create failed: {e:#}"));
            ctx.store.save(&record)?;
            return Err(e.context(format!(
                "creating machine `{name}` failed; it is kept in the Error state\n  hint: `machine rm -f {name}` removes what was made"
            )));
        }
    }
    // The host exists from here on: save what the driver said before
    // anything else can fail.
    ctx.store.save(&record)?;
    let mut target = crate::machine::Target {
        record,
        dir: dir.clone(),
    };
    let provisioned = provision_new(ctx, &driver, &mut target).await;
    let mut record = target.record;
    if let Err(e) = provisioned {
        record.phase = Phase::Failed;
        record.error = Some(format!(
            "provisioning failed: {}",
            first_line(&format!("{e:#}"))
        ));
        ctx.store.save(&record)?;
        return Err(e.context(format!(
            "machine `{name}` was created but provisioning failed; it is kept in the Error state\n  hint: fix the cause and run `machine provision {name}`, or remove it with `machine rm -f {name}`"
        )));
    }
    record.phase = Phase::Ready;
    ctx.store.save(&record)?;
    ui::done(&format!("Machine `{name}` created"), started.elapsed());
    ui::info(&format!(
        "To point your Docker client at it, run: eval $(machine env {name})"
    ));
    Ok(ExitCode::SUCCESS)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// Provisions Docker on a new machine, unless its driver has no SSH.
async fn provision_new(
    ctx: &Context,
    driver: &crate::driver_host::RunningDriver,
    t: &mut crate::machine::Target,
) -> anyhow::Result<()> {
    let conn = t.connection(driver, driver.call_timeout()).await?;
    if conn.ssh_host.is_empty() {
        tracing::debug!(machine = t.name(), "no SSH endpoint; not provisioning");
        return Ok(());
    }
    crate::provision::provision(ctx, t, &conn).await
}

/// Runs Create, showing its progress, and returns the driver's config.
async fn create_on_driver(
    driver: &crate::driver_host::RunningDriver,
    request: v1::CreateRequest,
) -> anyhow::Result<String> {
    let name = request
        .machine
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let what = || format!("driver `{}` could not create machine `{name}`", driver.name);
    // Creating a VM can take minutes; the call limit covers each event, not
    // the whole stream.
    let limit = driver
        .call_timeout()
        .max(std::time::Duration::from_secs(600));
    let mut stream = driver
        .call("Create", what, limit, driver.client().create(request))
        .await?;
    loop {
        let next = tokio::time::timeout(limit, stream.message()).await;
        let event = match next {
            Err(_) => anyhow::bail!(
                "{}: no progress from driver `{}` for {limit:?}",
                what(),
                driver.name
            ),
            Ok(Err(status)) => return Err(driver.explain("Create", what(), &status).await.into()),
            Ok(Ok(None)) => anyhow::bail!("{}: the driver ended Create without a result", what()),
            Ok(Ok(Some(event))) => event,
        };
        match event.event {
            Some(Event::Progress(p)) if p.fraction >= 0.0 => {
                ui::step(&format!("{} ({:.0}%)", p.message, p.fraction * 100.0));
            }
            Some(Event::Progress(p)) => ui::step(&p.message),
            Some(Event::Result(r)) => return Ok(r.config_json),
            None => {}
        }
    }
}
