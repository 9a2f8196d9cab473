//! The terminal sink: events and findings on stdout, as lines for people or
//! as JSON lines (`trace` and `replay`).

use std::io::{self, BufWriter, Write};

use super::{Emitted, SessionEvent, Sink};
use crate::event::display::line;
use crate::report;

/// How events are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutput {
    /// Not at all (findings and the summary only).
    None,
    /// One human line per event.
    Lines,
    /// One JSON object per line.
    Json,
}

pub struct Terminal {
    out: BufWriter<io::Stdout>,
    events: EventOutput,
    /// With JSON output, include each event's symbolized stack.
    inline_stacks: bool,
    /// Times in human lines are relative to this.
    start_ns: u64,
    /// Set when stdout was closed (e.g. piped into `head`): stop printing.
    closed: bool,
}

impl Terminal {
    pub fn new(events: EventOutput, inline_stacks: bool, start_ns: u64) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
            events,
            inline_stacks,
            start_ns,
            closed: false,
        }
    }

    fn write_out(&mut self, text: &str) {
        if self.closed {
            return;
        }
        if let Err(e) = self.out.write_all(text.as_bytes())
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.closed = true;
        }
    }
}

impl Sink for Terminal {
    fn event(&mut self, seen: &SessionEvent<'_>) -> io::Result<()> {
        if !seen.kept || seen.bookkeeping {
            return Ok(());
        }
        match self.events {
            EventOutput::None => {}
            EventOutput::Lines => {
                let mut text = line(seen.ev, self.start_ns);
                text.push('\n');
                self.write_out(&text);
            }
            EventOutput::Json => {
                let mut value = serde_json::to_value(seen.ev).map_err(io::Error::other)?;
                if self.inline_stacks
                    && let Some((_, stack)) = &seen.stack
                {
                    let frames: Vec<String> = stack
                        .frames_without_hooks()
                        .map(|f| f.to_string())
                        .collect();
                    value["frames"] = serde_json::json!(frames);
                }
                let mut text = value.to_string();
                text.push('\n');
                self.write_out(&text);
            }
        }
        Ok(())
    }

    fn finding(&mut self, found: &Emitted<'_>) -> io::Result<()> {
        let text = match self.events {
            EventOutput::Json => {
                format!("{}\n", report::json::to_line(found.finding, found.stacks))
            }
            _ => format!(
                "{}\n\n",
                report::human::render(found.finding, found.stacks).trim_end()
            ),
        };
        self.write_out(&text);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.closed
            && let Err(e) = self.out.flush()
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.closed = true;
        }
        Ok(())
    }

    fn closed(&self) -> bool {
        self.closed
    }
}
