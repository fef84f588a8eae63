//! `roost demo`'s live view on a terminal: the three machines (their
//! process, and their part in the awake role, read every half second) and
//! the steps (waiting, running with its time, held with what it found, or
//! failed with why), redrawn ten times a second by ratatui in an inline
//! viewport while the steps run. The last frame stays on the screen.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};
use ratatui::{Frame, Terminal, TerminalOptions, Viewport};

use roost_awake::LeaseStatus;
use roost_awake::status::Role;

/// How often the view is drawn.
const FRAME: Duration = Duration::from_millis(100);
/// How often each machine's role is read.
const ROLE_EVERY: Duration = Duration::from_millis(500);
/// The viewport's height in lines.
const HEIGHT: u16 = 24;
const SPINNER: [&str; 8] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧"];

/// What a machine's process is doing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Starting,
    Serving,
    /// SIGSTOPped, for the conflict.
    Stopped,
    /// Killed, for the failover.
    Killed,
}

pub struct MachineLine {
    pub name: &'static str,
    pub addr: Option<String>,
    pub process: Process,
    role: Option<Role>,
    epoch: Option<u64>,
}

pub enum StepState {
    Waiting,
    Running(Instant),
    Held { took: f64, found: String },
    Failed { took: f64, why: String },
}

pub struct StepLine {
    pub what: &'static str,
    pub state: StepState,
}

/// What the view shows; the demo writes it as it goes.
pub struct Board {
    pub machines: Vec<MachineLine>,
    pub steps: Vec<StepLine>,
}

impl Board {
    pub fn new(names: &[&'static str], steps: &[&'static str]) -> Board {
        Board {
            machines: names
                .iter()
                .map(|&name| MachineLine { name, addr: None, process: Process::Starting, role: None, epoch: None })
                .collect(),
            steps: steps.iter().map(|&what| StepLine { what, state: StepState::Waiting }).collect(),
        }
    }
}

/// Shared between the demo and the view's thread.
pub type SharedBoard = Arc<Mutex<Board>>;

pub fn lock(board: &SharedBoard) -> MutexGuard<'_, Board> {
    board.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the live view can be drawn: standard output is a terminal.
pub fn available() -> bool {
    std::io::stdout().is_terminal()
}

/// The view's thread, drawing until [`LiveView::finish`].
pub struct LiveView {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl LiveView {
    pub fn start(board: SharedBoard, lease: fn(&str) -> Option<LeaseStatus>) -> std::io::Result<LiveView> {
        let options = TerminalOptions { viewport: Viewport::Inline(HEIGHT) };
        let mut terminal = Terminal::with_options(CrosstermBackend::new(std::io::stdout()), options)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut roles_read: Option<Instant> = None;
            let mut tick = 0usize;
            loop {
                let last = stopping.load(Ordering::Acquire);
                if roles_read.is_none_or(|at| at.elapsed() >= ROLE_EVERY) && !last {
                    read_roles(&board, lease);
                    roles_read = Some(Instant::now());
                }
                let mut viewport = ratatui::layout::Rect::default();
                terminal.draw(|frame| {
                    viewport = frame.area();
                    draw(frame, &lock(&board), tick);
                })?;
                if last {
                    // What is printed next goes below the last frame.
                    terminal.set_cursor_position((0, viewport.bottom().saturating_sub(1)))?;
                    break;
                }
                tick += 1;
                std::thread::sleep(FRAME);
            }
            terminal.show_cursor()?;
            let mut out = std::io::stdout();
            writeln!(out)?;
            out.flush()
        });
        Ok(LiveView { stop, thread: Some(thread) })
    }

    /// Draws the last frame and leaves it on the screen.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(drawn)) => drawn,
            Some(Err(_)) => Err(std::io::Error::other("the view's thread panicked")),
            None => Ok(()),
        }
    }
}

/// Reads each serving machine's role, without holding the board meanwhile.
fn read_roles(board: &SharedBoard, lease: fn(&str) -> Option<LeaseStatus>) {
    let serving: Vec<(usize, String)> = lock(board)
        .machines
        .iter()
        .enumerate()
        .filter(|(_, m)| m.process == Process::Serving)
        .filter_map(|(i, m)| m.addr.clone().map(|a| (i, a)))
        .collect();
    for (i, addr) in serving {
        let status = lease(&addr);
        let mut board = lock(board);
        let machine = &mut board.machines[i];
        machine.role = status.as_ref().map(|s| s.role);
        machine.epoch = status.and_then(|s| s.epoch);
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Starting => "starting",
        Role::Awake => "awake",
        Role::HandingOff => "handing off",
        Role::Acquiring => "acquiring",
        Role::Standby => "standby",
        Role::Witness => "witness",
    }
}

fn draw(frame: &mut Frame, board: &Board, tick: usize) {
    let [machines, steps] =
        Layout::vertical([Constraint::Length(board.machines.len() as u16 + 3), Constraint::Min(3)]).areas(frame.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let rows = board.machines.iter().map(|m| {
        let (process, colour) = match m.process {
            Process::Starting => ("starting", Color::Yellow),
            Process::Serving => ("serving", Color::Green),
            Process::Stopped => ("stopped (SIGSTOP)", Color::Yellow),
            Process::Killed => ("killed (-9)", Color::Red),
        };
        let role = match (m.process, m.role) {
            (Process::Serving, Some(role)) => role_name(role).to_string(),
            (Process::Serving, None) | (Process::Starting, _) => "…".to_string(),
            _ => "—".to_string(),
        };
        let role_style = if role == "awake" { bold.fg(Color::Green) } else { Style::default() };
        let epoch = m.epoch.filter(|_| m.process == Process::Serving).map_or(String::new(), |e| e.to_string());
        Row::new(vec![
            Span::styled(m.name, bold),
            Span::raw(m.addr.clone().unwrap_or_default()),
            Span::styled(process, Style::default().fg(colour)),
            Span::styled(role, role_style),
            Span::raw(epoch),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(22),
        Constraint::Length(18),
        Constraint::Length(12),
        Constraint::Length(6),
    ];
    let table = Table::new(rows, widths)
        .header(
            Row::new(["MACHINE", "GATEWAY", "PROCESS", "ROLE", "EPOCH"]).style(Style::default().fg(Color::DarkGray)),
        )
        .block(Block::bordered().title(" roost demo: three machines on this one "));
    frame.render_widget(table, machines);

    let mut lines = Vec::new();
    for step in &board.steps {
        let (mark, style, detail) = match &step.state {
            StepState::Waiting => ("·".to_string(), Style::default().fg(Color::DarkGray), String::new()),
            StepState::Running(since) => (
                SPINNER[tick % SPINNER.len()].to_string(),
                Style::default().fg(Color::Yellow),
                format!("{:.1} s", since.elapsed().as_secs_f64()),
            ),
            StepState::Held { took, found } => {
                ("ok".to_string(), Style::default().fg(Color::Green), format!("{took:.1} s: {found}"))
            }
            StepState::Failed { took, why } => {
                ("FAIL".to_string(), Style::default().fg(Color::Red), format!("{took:.1} s: {why}"))
            }
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{mark:<5}"), style.add_modifier(Modifier::BOLD)),
            Span::styled(step.what, bold),
        ]));
        if !detail.is_empty() {
            lines.push(Line::from(Span::raw(format!("      {detail}"))));
        }
    }
    let steps_view = Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(" steps "));
    frame.render_widget(steps_view, steps);
}
