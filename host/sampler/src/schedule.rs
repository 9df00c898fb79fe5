//! Token schedules (how many tokens each decoding step commits) and temperature schedules.
//!
//! These reproduce the reference's numpy arithmetic operation by operation in f64, so the results
//! are bit-identical to the fixtures (including the quirks: descending linear chunks, banker's
//! rounding and a possibly negative last entry in the cosine schedule, `onex` indexed by step).

use std::str::FromStr;

use crate::error::SamplerError;

/// How a target's tokens are spread over its decoding steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScheduleKind {
    Linear,
    Cosine,
}

impl FromStr for TokenScheduleKind {
    type Err = SamplerError;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            _ => Err(SamplerError::UnknownTokenSchedule {
                name: name.to_owned(),
            }),
        }
    }
}

impl TokenScheduleKind {
    /// The schedule for `num_steps` steps over `total_tokens` tokens.
    pub fn tokens_per_step(self, num_steps: usize, total_tokens: usize) -> Vec<i64> {
        match self {
            Self::Linear => linear_schedule(num_steps, total_tokens),
            Self::Cosine => cosine_schedule(num_steps, total_tokens),
        }
    }
}

/// `numpy.linspace(start, stop, num)` (endpoint included), value by value as numpy computes it:
/// `i * step + start` with `step = (stop - start) / (num - 1)` and the last value set to `stop`.
pub(crate) fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let delta = stop - start;
    let divisions = (num - 1) as f64;
    let step = delta / divisions;
    let mut values: Vec<f64> = if step == 0.0 {
        // numpy's branch for denormal steps: divide first, then scale.
        (0..num)
            .map(|i| (i as f64 / divisions) * delta + start)
            .collect()
    } else {
        (0..num).map(|i| i as f64 * step + start).collect()
    };
    values[num - 1] = stop;
    values
}

/// Linear token schedule: the differences of `linspace(0, N, S + 1)` truncated to integers, sorted
/// so that larger chunks come first, with trailing zeros removed (so `S > N` gives `N` ones).
pub fn linear_schedule(num_steps: usize, total_tokens: usize) -> Vec<i64> {
    let boundaries: Vec<i64> = numpy_linspace(0.0, total_tokens as f64, num_steps + 1)
        .into_iter()
        .map(|value| value.floor() as i64)
        .collect();
    let mut chunks: Vec<i64> = boundaries
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .collect();
    chunks.sort_unstable_by(|a, b| b.cmp(a));
    while chunks.last() == Some(&0) {
        chunks.pop();
    }
    chunks
}

/// Cosine token schedule: `c_i = 0.5 (1 + cos(pi i / S))`, step `i < S - 1` commits
/// `round_half_even(N (c_i - c_{i+1}))` and the last step the remainder (which can be negative).
pub fn cosine_schedule(num_steps: usize, total_tokens: usize) -> Vec<i64> {
    if num_steps == 0 {
        // The reference appends the remainder even to an empty schedule.
        return vec![total_tokens as i64];
    }
    let curve: Vec<f64> = (0..num_steps)
        .map(|i| 0.5 * (1.0 + (std::f64::consts::PI * i as f64 / num_steps as f64).cos()))
        .collect();
    let mut tokens: Vec<i64> = curve
        .windows(2)
        .map(|pair| (total_tokens as f64 * (pair[0] - pair[1])).round_ties_even() as i64)
        .collect();
    let committed: i64 = tokens.iter().sum();
    tokens.push(total_tokens as i64 - committed);
    tokens
}

/// How the temperature evolves over a target's decoding steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TemperatureSchedule {
    /// The same temperature every step.
    Constant,
    /// Decays with the fraction of tokens already decoded.
    Linear,
    /// `onex:{min_temperature}:{power}`: a 1/x^power curve from the start temperature down to
    /// `min_temperature`.
    OneOverX { min_temperature: f64, power: f64 },
}

impl FromStr for TemperatureSchedule {
    type Err = SamplerError;
    /// Parses the reference's names: `constant`, `linear`, `onex:{min_t}:{power}`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| SamplerError::InvalidTemperatureSchedule {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        match spec {
            "constant" => return Ok(Self::Constant),
            "linear" => return Ok(Self::Linear),
            _ => {}
        }
        let Some(parameters) = spec.strip_prefix("onex:") else {
            return Err(invalid("expected constant, linear or onex:{min_t}:{power}"));
        };
        let mut parts = parameters.split(':');
        let (Some(min_text), Some(power_text), None) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(
                "onex takes exactly two parameters, onex:{min_t}:{power}",
            ));
        };
        let min_temperature: f64 = min_text
            .trim()
            .parse()
            .map_err(|_| invalid("min_t is not a number"))?;
        let power: f64 = power_text
            .trim()
            .parse()
            .map_err(|_| invalid("power is not a number"))?;
        if !min_temperature.is_finite() || min_temperature < 0.0 {
            return Err(invalid("min_t must be finite and not negative"));
        }
        if !power.is_finite() {
            return Err(invalid("power must be finite"));
        }
        Ok(Self::OneOverX {
            min_temperature,
            power,
        })
    }
}

impl TemperatureSchedule {
    /// One temperature per scheduled step. `num_steps` is the requested step count (the constant
    /// schedule has that many entries; the builder zips with the token schedule, which may be shorter).
    pub fn temperatures(
        &self,
        temperature: f64,
        num_steps: usize,
        token_schedule: &[i64],
    ) -> Vec<f64> {
        match *self {
            Self::Constant => vec![temperature * 1.0; num_steps],
            Self::Linear => linear_temperature_schedule(temperature, token_schedule),
            Self::OneOverX {
                min_temperature,
                power,
            } => onex_temperature_schedule(temperature, min_temperature, token_schedule, power),
        }
    }
}

/// The smallest temperature the decaying schedules produce (the reference clips there).
const TEMPERATURE_FLOOR: f64 = 1e-9;

/// `cumsum(schedule)_i / sum(schedule)` as numpy computes it (integer cumsum, one f64 division).
fn cumulative_fractions(token_schedule: &[i64]) -> (i64, Vec<f64>) {
    let total: i64 = token_schedule.iter().sum();
    let mut running = 0i64;
    let fractions = token_schedule
        .iter()
        .map(|&tokens| {
            running += tokens;
            running as f64 / total as f64
        })
        .collect();
    (total, fractions)
}

/// Linear temperature schedule: step 0 uses `temperature`, step `i >= 1` uses
/// `temperature * (N - cumsum_{i-1}) / N`, clipped at 1e-9.
pub fn linear_temperature_schedule(temperature: f64, token_schedule: &[i64]) -> Vec<f64> {
    if token_schedule.is_empty() {
        return vec![temperature.max(TEMPERATURE_FLOOR)];
    }
    let total: i64 = token_schedule.iter().sum();
    let mut temperatures = Vec::with_capacity(token_schedule.len());
    temperatures.push(temperature * 1.0);
    let mut running = 0i64;
    for &tokens in &token_schedule[..token_schedule.len() - 1] {
        running += tokens;
        // numpy evaluates `temp * (sum - cumsum) / sum` left to right.
        temperatures.push(temperature * (total - running) as f64 / total as f64);
    }
    temperatures
        .into_iter()
        .map(|t| clip_low(t, TEMPERATURE_FLOOR))
        .collect()
}

/// `onex` temperature schedule: `y = x^-power` over `x = linspace(1, 100, N)` (N = total tokens),
/// min-max normalised; step `i` uses `min_t + (max_t - min_t) (1 - cumsum_i / N) y[i]`, clipped
/// at 1e-9. The curve is indexed by the step index, not by the tokens decoded so far — a quirk of
/// the reference that the fixtures (and therefore we) keep.
pub fn onex_temperature_schedule(
    max_temperature: f64,
    min_temperature: f64,
    token_schedule: &[i64],
    power: f64,
) -> Vec<f64> {
    let (total, fractions) = cumulative_fractions(token_schedule);
    let curve_length = usize::try_from(total).unwrap_or(0);
    let curve: Vec<f64> = numpy_linspace(1.0, 100.0, curve_length)
        .into_iter()
        .map(|x| 1.0 / numpy_power(x, power))
        .collect();
    let lowest = curve.iter().copied().fold(f64::INFINITY, f64::min);
    let shifted: Vec<f64> = curve.iter().map(|y| y - lowest).collect();
    let highest = shifted.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    fractions
        .iter()
        .zip(shifted.iter())
        .map(|(fraction, y)| {
            let unscaled = (1.0 - fraction) * (y / highest);
            clip_low(
                min_temperature + (max_temperature - min_temperature) * unscaled,
                TEMPERATURE_FLOOR,
            )
        })
        .collect()
}

/// numpy's `clip(min=...)`: NaN stays NaN.
fn clip_low(value: f64, floor: f64) -> f64 {
    if value < floor { floor } else { value }
}

/// `array ** power` as numpy evaluates it: a few exponents take exact fast paths (sqrt, square,
/// reciprocal) that can differ from `pow` in the last bit.
fn numpy_power(base: f64, power: f64) -> f64 {
    if power == 0.5 {
        base.sqrt()
    } else if power == 1.0 {
        base
    } else if power == 2.0 {
        base * base
    } else if power == -1.0 {
        1.0 / base
    } else if power == 0.0 {
        1.0
    } else {
        base.powf(power)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_examples_from_the_reference_doc() {
        assert_eq!(
            linear_schedule(8, 196),
            vec![25, 25, 25, 25, 24, 24, 24, 24]
        );
        assert_eq!(linear_schedule(1, 7), vec![7]);
        assert_eq!(linear_schedule(5, 3), vec![1, 1, 1]);
        assert_eq!(linear_schedule(3, 0), Vec::<i64>::new());
    }

    #[test]
    fn cosine_examples_from_the_reference_doc() {
        assert_eq!(cosine_schedule(8, 196), vec![7, 21, 32, 38, 38, 32, 21, 7]);
        assert_eq!(cosine_schedule(1, 5), vec![5]);
    }

    #[test]
    fn onex_example_from_the_reference_doc() {
        let temps = onex_temperature_schedule(3.0, 0.5, &linear_schedule(8, 196), 0.5);
        let expected = [2.681, 1.978, 1.537, 1.221, 0.984, 0.794, 0.635, 0.5];
        for (t, e) in temps.iter().zip(expected) {
            assert!((t - e).abs() < 1e-3, "{t} vs {e}");
        }
    }

    #[test]
    fn temperature_schedule_names_parse() {
        assert_eq!(
            "constant".parse::<TemperatureSchedule>().unwrap(),
            TemperatureSchedule::Constant
        );
        assert_eq!(
            "onex:0.5:0.5".parse::<TemperatureSchedule>().unwrap(),
            TemperatureSchedule::OneOverX {
                min_temperature: 0.5,
                power: 0.5
            }
        );
        for bad in [
            "onex",
            "onex:0.5",
            "onex:a:1",
            "onex:1:2:3",
            "cosine",
            "onex:-1:0.5",
        ] {
            assert!(matches!(
                bad.parse::<TemperatureSchedule>(),
                Err(SamplerError::InvalidTemperatureSchedule { .. })
            ));
        }
    }
}
