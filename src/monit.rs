//! `pm-runtime monit`: a terminal dashboard of the running runtime (ratatui).
//!
//! Top: every process with status, restarts, CPU and memory, refreshed every second. Bottom:
//! the live log lines of the selected process. ↑/↓ (or k/j) select, q, Esc or Ctrl-C quit; the
//! terminal is restored on every exit path (ratatui's init installs a panic hook that restores it).
//! It only reads through the control socket: closing it never affects the apps.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};
use serde_json::Value;

use crate::control::client;
use crate::control::protocol::Request;
use crate::exit::Outcome;

const LOG_LINES: usize = 500;

struct State {
    procs: Vec<Value>,
    table: TableState,
    /// pm_id whose logs are shown.
    shown: Option<u64>,
    logs: VecDeque<String>,
    last_seq: u64,
    error: Option<String>,
}

impl State {
    fn selected_id(&self) -> Option<u64> {
        self.table.selected().and_then(|i| self.procs.get(i)).and_then(|p| p["pm_id"].as_u64())
    }

    fn refresh(&mut self, home: &Path) {
        match client::processes(home) {
            Ok(ps) => {
                self.procs = ps;
                self.error = None;
                if self.table.selected().is_none_or(|i| i >= self.procs.len()) {
                    self.table.select(if self.procs.is_empty() { None } else { Some(0) });
                }
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn poll_logs(&mut self, home: &Path) {
        let id = self.selected_id();
        if id != self.shown {
            self.shown = id;
            self.logs.clear();
            self.last_seq = 0;
        }
        let Some(id) = id else { return };
        let target = Some(id.to_string());
        let req = if self.last_seq == 0 {
            Request::Logs { target, lines: 100, after: None }
        } else {
            Request::Logs { target, lines: 0, after: Some(self.last_seq) }
        };
        if let Ok(r) = client::request(home, &req) {
            for l in r.lines.iter().flatten() {
                self.last_seq = self.last_seq.max(l.seq);
                let prefix = if l.kind == "err" { "err" } else { "out" };
                self.logs.push_back(format!("{prefix} │ {}", l.message));
                while self.logs.len() > LOG_LINES {
                    self.logs.pop_front();
                }
            }
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1024.0 / 1024.0)
}

fn draw(frame: &mut ratatui::Frame, st: &mut State) {
    let list_height = (st.procs.len() as u16 + 3).min(frame.area().height / 2).max(4);
    let [top, bottom, help] =
        Layout::vertical([Constraint::Length(list_height), Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    let rows = st.procs.iter().map(|p| {
        let env = &p["pm2_env"];
        let status = env["status"].as_str().unwrap_or("");
        let color = match status {
            "online" => Color::Green,
            "launching" | "stopping" | "waiting restart" => Color::Yellow,
            _ => Color::Red,
        };
        Row::new(vec![
            p["pm_id"].to_string(),
            p["name"].as_str().unwrap_or("").to_string(),
            p["pid"].to_string(),
            status.to_string(),
            env["restart_time"].to_string(),
            format!("{}%", p["monit"]["cpu"].as_f64().unwrap_or(0.0)),
            mb(p["monit"]["memory"].as_u64().unwrap_or(0)),
        ])
        .style(Style::default().fg(color))
    });
    let widths = [
        Constraint::Length(4),
        Constraint::Min(12),
        Constraint::Length(8),
        Constraint::Length(16),
        Constraint::Length(4),
        Constraint::Length(7),
        Constraint::Length(10),
    ];
    let title = match &st.error {
        Some(e) => format!(" Processes — {e} "),
        None => " Processes ".to_string(),
    };
    let table = Table::new(rows, widths)
        .header(Row::new(vec!["id", "name", "pid", "status", "↺", "cpu", "mem"]).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(Block::default().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(table, top, &mut st.table);

    let name = st.table.selected().and_then(|i| st.procs.get(i)).and_then(|p| p["name"].as_str()).unwrap_or("-").to_string();
    let height = bottom.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = st.logs.iter().skip(st.logs.len().saturating_sub(height)).map(|l| Line::from(l.as_str())).collect();
    let logs = Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(format!(" Logs: {name} ")));
    frame.render_widget(logs, bottom);
    frame.render_widget(Paragraph::new(" ↑/↓ select   q quit"), help);
}

pub fn run(home: &Path) -> Outcome {
    let mut st = State { procs: Vec::new(), table: TableState::default(), shown: None, logs: VecDeque::new(), last_seq: 0, error: None };
    st.refresh(home);
    if let Some(e) = st.error.take() {
        eprintln!("pm-runtime: {e}");
        return Outcome::AppsFinished(1);
    }
    let mut terminal = ratatui::init();
    let mut last_refresh = Instant::now();
    let outcome = loop {
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            st.refresh(home);
            last_refresh = Instant::now();
        }
        st.poll_logs(home);
        if terminal.draw(|f| draw(f, &mut st)).is_err() {
            break Outcome::Internal;
        }
        match event::poll(Duration::from_millis(250)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => break Outcome::Internal,
        }
        let Ok(Event::Key(key)) = event::read() else { continue };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        let n = st.procs.len();
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => break Outcome::Requested,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => break Outcome::Requested,
            KeyCode::Down | KeyCode::Char('j') if n > 0 => st.table.select(Some(st.table.selected().map_or(0, |i| (i + 1) % n))),
            KeyCode::Up | KeyCode::Char('k') if n > 0 => st.table.select(Some(st.table.selected().map_or(0, |i| (i + n - 1) % n))),
            _ => {}
        }
    };
    ratatui::restore();
    outcome
}
