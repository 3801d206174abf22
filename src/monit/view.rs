//! Drawing `monit`'s panes from its [`State`]: a pure function of the state and the terminal's
//! size (columns are sized to their content; what does not fit is cut, never wrapped).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState};
use serde_json::Value;

use super::{Pane, State, Typing};
use crate::control::client::{human_bytes, human_uptime};

/// Widest bar of a gauge.
const MAX_BAR: usize = 20;

/// The help line: key, label, and the label when the line must fit 80 columns (`None`: left out).
const KEYS: [(&str, &str, Option<&str>); 11] = [
    ("Tab", "pane", Some("pane")),
    ("↑↓", "move", None),
    ("r", "restart", Some("restart")),
    ("l", "reload", Some("reload")),
    ("s", "stop/start", Some("stop")),
    ("+/-", "scale", Some("scale")),
    ("f", "filter", Some("filter")),
    ("/", "search", Some("search")),
    ("End", "follow", None),
    ("?", "help", Some("help")),
    ("q", "quit", Some("quit")),
];

const HELP: &str = "\
Tab / Shift-Tab   switch pane (the focused one has a cyan border)
↑ ↓  (k j)        select a process, or scroll the focused pane
PgUp PgDn         scroll the logs back and forth
Home / End (g G)  oldest log line / follow the newest
r  l              restart / reload the selected process
s                 stop it, or start it when stopped
+  -              scale its app by one instance
f                 filter processes by name (Enter keeps, Esc clears)
/                 search the logs (shows matching lines)
Esc               clear filter and search; quit when none
q  Ctrl-C         quit (the apps keep running)";

fn status_color(status: &str) -> Color {
    match status {
        "online" => Color::Green,
        "launching" | "stopping" | "waiting restart" => Color::Yellow,
        _ => Color::Red,
    }
}

/// A bar of `width` cells filled to `frac` (0..=1): the filled and the empty part.
pub fn bar(frac: f64, width: usize) -> (String, String) {
    let full = ((frac.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    ("█".repeat(full), "░".repeat(width - full))
}

fn gauge(frac: f64, width: usize, text: String, text_width: usize) -> Line<'static> {
    let color = match frac {
        f if f >= 0.8 => Color::Red,
        f if f >= 0.5 => Color::Yellow,
        _ => Color::Green,
    };
    let mut spans = Vec::new();
    if width > 0 {
        let (full, empty) = bar(frac, width);
        spans.push(Span::styled(full, Style::default().fg(color)));
        spans.push(Span::styled(empty, Style::default().fg(Color::DarkGray)));
        spans.push(Span::raw(" "));
    }
    spans.push(Span::raw(format!("{text:>text_width$}")));
    Line::from(spans)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1024.0 / 1024.0)
}

fn pane_block(title: String, pane: Pane, st: &State) -> Block<'static> {
    let focused = st.focus() == pane;
    let style = if focused { Style::default().fg(Color::Cyan).add_modifier(Modifier::BOLD) } else { Style::default() };
    Block::default().borders(Borders::ALL).border_style(style).title(Span::styled(title, style))
}

pub fn draw(frame: &mut Frame, st: &mut State) {
    let [body, bottom_line] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(frame.area());
    let n = st.visible().len() as u16;
    let procs_h = (n + 3).min(body.height / 3).max(4);
    let bottom_h = (body.height * 2 / 5).clamp(6, 16);
    let [procs, logs, bottom] =
        Layout::vertical([Constraint::Length(procs_h), Constraint::Min(3), Constraint::Length(bottom_h)]).areas(body);
    let metrics_lines = metrics(st);
    let label_w = metrics_lines.iter().map(|l| l.width()).max().unwrap_or(0) as u16 + 2;
    let [metrics_area, meta_area] =
        Layout::horizontal([Constraint::Length(label_w.max(24).min(bottom.width / 2)), Constraint::Min(10)]).areas(bottom);
    draw_processes(frame, procs, st);
    draw_logs(frame, logs, st);
    st.metrics_scroll = st.metrics_scroll.min((metrics_lines.len() as u16).saturating_sub(metrics_area.height.saturating_sub(2)));
    let scroll = st.metrics_scroll;
    let name = st.selected_proc().and_then(|p| p["name"].as_str()).unwrap_or("-").to_string();
    frame.render_widget(
        Paragraph::new(metrics_lines).scroll((scroll, 0)).block(pane_block(format!(" Metrics: {name} "), Pane::Metrics, st)),
        metrics_area,
    );
    draw_metadata(frame, meta_area, st);
    frame.render_widget(Paragraph::new(bottom_text(st, bottom_line.width as usize)), bottom_line);
    if st.help {
        draw_help(frame, body);
    }
}

fn draw_processes(frame: &mut Frame, area: Rect, st: &mut State) {
    let procs: Vec<Value> = st.visible().into_iter().cloned().collect();
    let mem_total = st.facts.mem_total();
    struct R {
        id: String,
        name: String,
        status: String,
        restarts: String,
        cpu: f64,
        cpu_text: String,
        mem_frac: f64,
        mem_text: String,
        uptime: String,
    }
    let rows: Vec<R> = procs
        .iter()
        .map(|p| {
            let env = &p["pm2_env"];
            let status = env["status"].as_str().unwrap_or("").to_string();
            let mem = p["monit"]["memory"].as_u64().unwrap_or(0);
            let scale = env["max_memory_restart"].as_u64().filter(|m| *m > 0).unwrap_or(mem_total);
            let cpu = p["monit"]["cpu"].as_f64().unwrap_or(0.0);
            R {
                id: p["pm_id"].to_string(),
                name: p["name"].as_str().unwrap_or("").to_string(),
                uptime: if status == "online" { human_uptime(env["pm_uptime"].as_u64().unwrap_or(0)) } else { "-".into() },
                status,
                restarts: env["restart_time"].to_string(),
                cpu,
                cpu_text: format!("{cpu:.1}%"),
                mem_frac: mem as f64 / scale as f64,
                mem_text: mb(mem),
            }
        })
        .collect();
    let w = |f: &dyn Fn(&R) -> usize, head: &str| rows.iter().map(f).max().unwrap_or(0).max(head.chars().count());
    let id_w = w(&|r| r.id.len(), "id");
    let name_w = w(&|r| r.name.chars().count(), "name");
    let status_w = w(&|r| r.status.len(), "status");
    let rs_w = w(&|r| r.restarts.len(), "↺");
    let up_w = w(&|r| r.uptime.len(), "uptime");
    let cpu_t = w(&|r| r.cpu_text.len(), "");
    let mem_t = w(&|r| r.mem_text.len(), "");
    // Borders, six gaps between seven columns, the texts; what is left goes to the two bars.
    let fixed = 2 + 6 + id_w + name_w + status_w + rs_w + up_w + cpu_t + mem_t + 2;
    let bar_w = ((area.width as usize).saturating_sub(fixed) / 2).min(MAX_BAR);
    let bar_w = if bar_w < 3 { 0 } else { bar_w };
    let cpu_w = cpu_t + if bar_w > 0 { bar_w + 1 } else { 0 };
    let mem_w = mem_t + if bar_w > 0 { bar_w + 1 } else { 0 };
    let table_rows = rows.into_iter().map(|r| {
        Row::new(vec![
            Cell::from(r.id),
            Cell::from(r.name),
            Cell::from(Span::styled(r.status.clone(), Style::default().fg(status_color(&r.status)))),
            Cell::from(r.restarts),
            Cell::from(gauge(r.cpu / 100.0, bar_w, r.cpu_text, cpu_t)),
            Cell::from(gauge(r.mem_frac, bar_w, r.mem_text, mem_t)),
            Cell::from(r.uptime),
        ])
    });
    let widths = [id_w, name_w, status_w, rs_w, cpu_w, mem_w, up_w].map(|w| Constraint::Length(w as u16));
    let title = match (&st.error, &st.message) {
        (Some(e), _) => format!(" Processes — {e} "),
        (None, Some((m, _))) => format!(" Processes — {m} "),
        (None, None) if !st.filter.is_empty() => format!(" Processes (filter: {}) ", st.filter),
        _ => " Processes ".to_string(),
    };
    let header = Row::new(["id", "name", "status", "↺", "cpu", "memory", "uptime"]).style(Style::default().add_modifier(Modifier::BOLD));
    let table = Table::new(table_rows, widths)
        .header(header)
        .block(pane_block(title, Pane::Processes, st))
        .row_highlight_style(Style::default().bg(Color::Indexed(238)).add_modifier(Modifier::BOLD));
    let mut ts = TableState::default().with_selected(st.selected_index());
    frame.render_stateful_widget(table, area, &mut ts);
}

/// `text` with every case-insensitive occurrence of `needle` highlighted.
fn highlighted(text: &str, needle: &str, base: Style) -> Vec<Span<'static>> {
    let lower = text.to_lowercase();
    let nl = needle.to_lowercase();
    if needle.is_empty() || lower.len() != text.len() {
        return vec![Span::styled(text.to_string(), base)];
    }
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = lower[at..].find(&nl).map(|i| i + at) {
        out.push(Span::styled(text[at..i].to_string(), base));
        out.push(Span::styled(text[i..i + nl.len()].to_string(), base.bg(Color::Yellow).fg(Color::Black)));
        at = i + nl.len();
    }
    out.push(Span::styled(text[at..].to_string(), base));
    out
}

fn draw_logs(frame: &mut Frame, area: Rect, st: &State) {
    let view = st.log_view();
    let height = area.height.saturating_sub(2) as usize;
    let end = view.len().saturating_sub(st.log_scroll);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = view[start..end]
        .iter()
        .map(|l| {
            let (tag, style) = if l.err { ("err ", Style::default().fg(Color::Red)) } else { ("out ", Style::default()) };
            let mut spans =
                vec![Span::styled(tag, style.add_modifier(Modifier::DIM)), Span::styled("│ ", Style::default().fg(Color::DarkGray))];
            spans.extend(highlighted(&l.text, &st.search, style));
            Line::from(spans)
        })
        .collect();
    let name = st.selected_proc().map(|p| format!("{} [{}]", p["name"].as_str().unwrap_or(""), p["pm_id"])).unwrap_or("-".into());
    let mut title = format!(" Logs: {name} ");
    if !st.search.is_empty() {
        title += &format!("— search \"{}\": {} lines ", st.search, view.len());
    }
    title += &if st.log_scroll == 0 { "— following ".to_string() } else { format!("— {} lines back ", st.log_scroll) };
    frame.render_widget(Paragraph::new(lines).block(pane_block(title, Pane::Logs, st)), area);
}

/// A metric's value: numbers as PM2 shows them (at most two decimals), with the unit.
fn metric_value(m: &Value) -> String {
    let v = match &m["value"] {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            let s = format!("{f:.2}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    match m["unit"].as_str().filter(|u| !u.is_empty()) {
        Some(u) => format!("{v} {u}"),
        None => v,
    }
}

fn pairs(rows: Vec<(String, String)>) -> Vec<Line<'static>> {
    let w = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    rows.into_iter()
        .map(|(k, v)| Line::from(vec![Span::styled(format!("{k:<w$}  "), Style::default().fg(Color::Cyan)), Span::raw(v)]))
        .collect()
}

/// The runtime's numbers, then the app's own (`@pm2/io`).
fn metrics(st: &State) -> Vec<Line<'static>> {
    let Some(p) = st.selected_proc() else { return Vec::new() };
    let mut rows = vec![
        ("CPU".to_string(), format!("{:.1} %", p["monit"]["cpu"].as_f64().unwrap_or(0.0))),
        ("Memory".to_string(), mb(p["monit"]["memory"].as_u64().unwrap_or(0))),
    ];
    let custom = p["pm2_env"]["axm_monitor"].as_object();
    for (k, m) in custom.into_iter().flatten() {
        rows.push((k.clone(), metric_value(m)));
    }
    let mut lines = pairs(rows);
    if custom.is_none_or(|c| c.is_empty()) {
        lines.push(Line::styled("no @pm2/io metrics", Style::default().fg(Color::DarkGray)));
    }
    lines
}

fn metadata(st: &mut State) -> Vec<Line<'static>> {
    let Some(p) = st.selected_proc().cloned() else { return vec![Line::raw("no process")] };
    let e = &p["pm2_env"];
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let name = s(&p["name"]);
    let instances = st.procs.iter().filter(|q| q["name"] == p["name"]).count();
    let interp = s(&e["exec_interpreter"]);
    let interp = match st.facts.interpreter_version(&interp) {
        Some(v) => format!("{interp} ({v})"),
        None => interp,
    };
    let mut last_exit = match e["exit_code"].as_i64() {
        Some(c) => format!("code {c}"),
        None => "-".to_string(),
    };
    // #22's death certificate, when the runtime reports it.
    if let Some(r) = e["last_exit"]["reason"].as_str() {
        last_exit = r.to_string();
    }
    let created = e["created_at"]
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or("-".into(), |t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string());
    let uptime = if e["status"] == "online" { human_uptime(e["pm_uptime"].as_u64().unwrap_or(0)) } else { "-".into() };
    let mut rows = vec![
        ("app".to_string(), format!("{name} [{}]", p["pm_id"])),
        ("namespace".into(), s(&e["namespace"])),
        ("version".into(), s(&e["version"])),
        ("script".into(), s(&e["pm_exec_path"])),
        ("cwd".into(), s(&e["pm_cwd"])),
        ("interpreter".into(), interp),
    ];
    if e["node_args"].as_array().is_some_and(|a| !a.is_empty()) {
        rows.push(("interpreter args".into(), e["node_args"].to_string()));
    }
    rows.extend([
        ("exec mode".into(), s(&e["exec_mode"])),
        ("instances".into(), instances.to_string()),
        ("restarts".into(), s(&e["restart_time"])),
        ("last exit".into(), last_exit),
        ("uptime".into(), uptime),
        ("created at".into(), created),
        ("watch".into(), s(&e["watch"])),
        ("memory limit".into(), e["max_memory_restart"].as_u64().map_or("none".into(), human_bytes)),
        ("out log".into(), e["pm_out_log_path"].as_str().unwrap_or("stdout").to_string()),
        ("err log".into(), e["pm_err_log_path"].as_str().unwrap_or("stderr").to_string()),
    ]);
    match e["pm_cwd"].as_str().and_then(|c| st.facts.git(c)) {
        Some(g) => {
            rows.push(("git branch".into(), g.branch.unwrap_or_else(|| "(detached)".into())));
            rows.push(("git commit".into(), g.commit.map_or("-".into(), |c| c.chars().take(12).collect())));
            if let Some(r) = g.remote {
                rows.push(("git remote".into(), r));
            }
        }
        None => rows.push(("git".into(), "not a repository".into())),
    }
    pairs(rows)
}

/// The metadata pairs, in two columns when they do not fit in one and the pane is wide enough.
fn draw_metadata(frame: &mut Frame, area: Rect, st: &mut State) {
    let meta = metadata(st);
    let block = pane_block(" Metadata ".into(), Pane::Metadata, st);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let widest = meta.iter().map(|l| l.width()).max().unwrap_or(0) as u16;
    let two = meta.len() as u16 > inner.height && inner.width >= 2 * widest + 2;
    let half = meta.len().div_ceil(2);
    // Never scrolled past the last line (the pane may have grown since).
    st.meta_scroll = st.meta_scroll.min((if two { half } else { meta.len() } as u16).saturating_sub(inner.height));
    let scroll = st.meta_scroll;
    if two {
        let (left, right) = (meta[..half].to_vec(), meta[half..].to_vec());
        let [a, b] = Layout::horizontal([Constraint::Length(widest + 2), Constraint::Min(0)]).areas(inner);
        frame.render_widget(Paragraph::new(left).scroll((scroll, 0)), a);
        frame.render_widget(Paragraph::new(right).scroll((scroll, 0)), b);
    } else {
        frame.render_widget(Paragraph::new(meta).scroll((scroll, 0)), inner);
    }
}

fn bottom_text(st: &State, width: usize) -> Line<'static> {
    let key_style = Style::default().fg(Color::Black).bg(Color::Cyan);
    if let Some(t) = st.typing {
        let (label, text) = match t {
            Typing::Filter => ("filter processes: ", &st.filter),
            Typing::Search => ("search logs: ", &st.search),
        };
        return Line::from(vec![
            Span::styled(label, key_style),
            Span::raw(format!(" {text}▏")),
            Span::styled("  Enter keep · Esc clear", Style::default().fg(Color::DarkGray)),
        ]);
    }
    // Long labels when they fit, the keys alone otherwise.
    let long: usize = KEYS.iter().map(|(k, w, _)| k.chars().count() + w.chars().count() + 2).sum();
    let mut spans = Vec::new();
    for (k, w, short) in KEYS {
        let label = if long <= width {
            w
        } else if let Some(s) = short {
            s
        } else {
            continue;
        };
        spans.push(Span::styled(k, key_style));
        spans.push(Span::raw(format!(" {label} ")));
    }
    Line::from(spans)
}

fn draw_help(frame: &mut Frame, body: Rect) {
    let lines: Vec<Line> = HELP.lines().map(Line::raw).collect();
    let w = (HELP.lines().map(|l| l.chars().count()).max().unwrap_or(0) as u16 + 4).min(body.width);
    let h = (lines.len() as u16 + 2).min(body.height);
    let area = Rect { x: body.x + (body.width - w) / 2, y: body.y + (body.height - h) / 2, width: w, height: h };
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" Keys (any key closes) ").style(Style::default())),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    #[test]
    fn bars_and_highlights() {
        assert_eq!(bar(0.5, 4), ("██".into(), "░░".into()));
        assert_eq!(bar(2.0, 3), ("███".into(), "".into()));
        assert_eq!(bar(-1.0, 2), ("".into(), "░░".into()));
        let spans = highlighted("Error: boom error", "error", Style::default());
        let hits: Vec<_> = spans.iter().filter(|s| s.style.bg == Some(Color::Yellow)).map(|s| s.content.to_string()).collect();
        assert_eq!(hits, ["Error", "error"]);
        assert_eq!(metric_value(&json!({"value": 1.23456, "unit": "ms"})), "1.23 ms");
        assert_eq!(metric_value(&json!({"value": 17})), "17");
        assert_eq!(metric_value(&json!({"value": "N/A"})), "N/A");
    }

    fn screen(st: &mut State, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, st)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h).map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>() + "\n").collect()
    }

    #[test]
    fn four_panes_fit_80x24_and_columns_follow_the_content() {
        let p = json!({"pm_id": 0, "name": "api", "pid": 1, "monit": {"cpu": 50.0, "memory": 1048576},
            "pm2_env": {"status": "online", "restart_time": 2, "max_memory_restart": 2097152, "pm_uptime": 0,
                "axm_monitor": {"Queue depth": {"value": 17, "unit": "jobs"}}, "exec_interpreter": "none"}});
        let mut st = State { procs: vec![p], ..Default::default() };
        st.fix_selection();
        st.push_logs([super::super::LogEntry { err: true, text: "boom".into() }]);
        let text = screen(&mut st, 80, 24);
        for want in ["Processes", "Logs: api [0]", "Metrics: api", "Metadata", "Queue depth  17 jobs", "err │ boom", "q quit"] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        // Half the CPU bar and half the memory bar (the limit is 2 MB) are full.
        let row = text.lines().find(|l| l.contains("api") && l.contains("online")).unwrap();
        assert!(row.contains("50.0%") && row.contains("1.0 MB") && row.contains('█') && row.contains('░'), "{row}");
        let name_col = row.find("api").unwrap();
        let status_col = row.find("online").unwrap();
        assert!(status_col - name_col <= 5, "the name column is as wide as the names: {row}");
        // 200 wide: the bars grow to their maximum and every key has its label.
        let wide = screen(&mut st, 200, 50);
        assert!(wide.contains(&"█".repeat(MAX_BAR / 2)), "{wide}");
        assert!(wide.contains("stop/start") && wide.contains("follow"), "{wide}");
        // Tiny terminals (and the help over them) draw without a panic.
        st.help = true;
        for w in (1..=121).step_by(10) {
            for h in (1..=31).step_by(5) {
                screen(&mut st, w, h);
            }
        }
    }
}
