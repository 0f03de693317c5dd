//! The guest time each prompt has spent, so that one prompt of many
//! near-deadline calls cannot hold the queue: past its budget, its calls fail.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use cretok_node_api::CancelToken;

/// Prompts remembered at once; the oldest is forgotten first. Prompts run one
/// after another per worker, so a few cover every prompt still running.
const PROMPTS_KEPT: usize = 16;

/// Guest time used per prompt (a prompt is known by its cancel token).
pub(crate) struct PromptClock {
    budget: Duration,
    used: Mutex<VecDeque<(CancelToken, Duration)>>,
}

impl PromptClock {
    pub(crate) fn new(budget: Duration) -> Self {
        PromptClock {
            budget,
            used: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    /// The guest time `prompt` has left.
    pub(crate) fn remaining(&self, prompt: &CancelToken) -> Duration {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let spent = used
            .iter()
            .find(|(token, _)| token.is_same(prompt))
            .map_or(Duration::ZERO, |(_, spent)| *spent);
        self.budget.saturating_sub(spent)
    }

    /// Adds `took` to what `prompt` has used.
    pub(crate) fn charge(&self, prompt: &CancelToken, took: Duration) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        match used.iter_mut().find(|(token, _)| token.is_same(prompt)) {
            Some((_, spent)) => *spent += took,
            None => {
                if used.len() == PROMPTS_KEPT {
                    used.pop_front();
                }
                used.push_back((prompt.clone(), took));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_each_prompt_separately() {
        let clock = PromptClock::new(Duration::from_millis(100));
        let (a, b) = (CancelToken::new(), CancelToken::new());
        clock.charge(&a, Duration::from_millis(70));
        clock.charge(&a.clone(), Duration::from_millis(20));
        assert_eq!(clock.remaining(&a), Duration::from_millis(10));
        assert_eq!(clock.remaining(&b), Duration::from_millis(100));
        clock.charge(&a, Duration::from_millis(20));
        assert_eq!(clock.remaining(&a), Duration::ZERO);
    }
}
