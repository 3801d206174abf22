//! STAND-IN until the real loader lands.
mod model;
pub use model::*;
use std::path::Path;
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}
impl std::error::Error for ConfigError {}
pub fn is_config_file(path: &str) -> bool {
    [".json", ".yml", ".yaml", ".config.js", ".config.cjs", ".config.mjs"].iter().any(|e| path.contains(e))
}
pub fn load(path: &Path, _o: &Overrides) -> Result<Ecosystem, ConfigError> {
    Err(ConfigError { problems: vec![format!("{}: not supported yet", path.display())] })
}
pub fn resolve_instances(i: Instances, cpus: usize) -> u32 {
    match i {
        Instances::Count(0) | Instances::Max => cpus.max(1) as u32,
        Instances::Count(n) => n,
        Instances::MinusCpus(n) => (cpus as i64 - n as i64).max(1) as u32,
    }
}
pub fn from_script(script: &str, o: &Overrides) -> Result<Ecosystem, ConfigError> {
    let cwd = std::env::current_dir().unwrap();
    let exec_path = cwd.join(script);
    let (program, mut argv, interp, is_node) = if script.ends_with(".js") {
        ("/usr/bin/node".into(), vec![], "node", true)
    } else if script.ends_with(".py") {
        ("/usr/bin/python3".into(), vec![], "python3", false)
    } else {
        ("/bin/sh".into(), vec![], "bash", false)
    };
    argv.push(exec_path.to_string_lossy().into_owned());
    argv.extend(o.args.iter().cloned());
    let n = o.instances.as_deref().and_then(|s| s.parse().ok()).unwrap_or(1);
    let app = App {
        name: o.name.clone().unwrap_or_else(|| Path::new(script).file_stem().unwrap().to_string_lossy().into_owned()),
        namespace: "default".into(),
        script: script.into(),
        exec_path,
        cwd,
        args: o.args.clone(),
        interpreter_args: vec![],
        command: Command { program, argv, interpreter: interp.into(), is_node },
        env: Default::default(),
        filter_env: FilterEnv::Inherit,
        port: None,
        instances: Instances::Count(n),
        exec_mode: ExecMode::Fork,
        instance_var: "NODE_APP_INSTANCE".into(),
        increment_var: None,
        uid: None,
        gid: None,
        autostart: true,
        autorestart: !o.no_autorestart,
        stop_exit_codes: o.stop_exit_codes.clone().unwrap_or_default(),
        min_uptime: std::time::Duration::from_millis(1000),
        max_restarts: 16,
        restart_delay: Default::default(),
        exp_backoff_restart_delay: None,
        max_memory_restart: None,
        cron_restart: None,
        kill_timeout: std::time::Duration::from_millis(o.kill_timeout.unwrap_or(1600)),
        kill_signal: "SIGINT".into(),
        kill_retry_time: std::time::Duration::from_millis(100),
        shutdown_with_message: false,
        treekill: true,
        wait_ready: false,
        listen_timeout: std::time::Duration::from_millis(3000),
        watch: Watch::Off,
        ignore_watch: vec![],
        watch_delay: Default::default(),
        watch_options: None,
        out_file: None,
        error_file: None,
        log_file: None,
        pid_file: None,
        merge_logs: None,
        log_date_format: None,
        time: false,
        log_type: None,
        disable_logs: false,
        log_max_size: None,
        log_retain: None,
        ignored: Default::default(),
    };
    Ok(Ecosystem { file: None, apps: vec![app], warnings: vec![] })
}
