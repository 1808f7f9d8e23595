//! orelink-outlook: what demand is coming, per cluster × product family, and
//! where capacity will run short.
//!
//! Pure and deterministic (no Kafka, Redis or HTTP; the same series give the
//! same forecast): an hourly series of event time in, a forecast of the next
//! hours with an 80 % interval out ([`forecast`]: MSTL with daily and weekly
//! seasonality and an ETS trend, from `augurs`, its week's level halfway to
//! the last four weeks' mean); the scores a backtest
//! reports against a seasonal-naive baseline ([`Backtest`]); and the
//! capacity-gap episodes that alerts are made of ([`Episode::step`]). The
//! view keeps the series and calls these at its edge; `orelink bench outlook`
//! backtests them on a seeded simulation. No delivery guarantee of its own.

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::prelude::*;

/// An hour's slot of event time: milliseconds since the epoch / 3 600 000.
pub const HOUR_MS: i64 = 3_600_000;
/// The seasonalities of demand: the working day and the week, in hours.
pub const DAY: usize = 24;
pub const WEEK: usize = 168;
/// How far the outlook looks: the next 7 days.
pub const HORIZON: usize = WEEK;
/// The interval the outlook gives: 80 % of outcomes are meant to fall inside.
pub const LEVEL: f64 = 0.8;
/// The calibration changes the model's interval by at most this factor
/// either way: a level shift inside the calibration week makes its errors
/// look many half-widths wide, and an interval widened by that would say
/// nothing.
pub const MAX_WIDENING: f64 = 4.0;
/// A forecast needs two weeks of history: MSTL estimates a weekly pattern from at least two of them.
pub const MIN_HISTORY: usize = 2 * WEEK;
/// The slow estimate of the week's demand is the mean of (at most) this many
/// last whole weeks; see [`forecast`].
pub const RECENT_WEEKS: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OutlookError {
    #[error("{have} hours of history; a forecast needs at least {need}")]
    TooShort { have: usize, need: usize },
    #[error("the model could not be fitted: {0}")]
    Model(String),
}

/// The next `point.len()` hours after the history's last, with the interval at `level`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Forecast {
    pub level: f64,
    pub point: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
}

impl Forecast {
    /// The forecast total over the horizon (kg): what the next 7 days are expected to ask.
    pub fn total(&self) -> f64 {
        self.point.iter().sum()
    }
}

/// Forecasts `horizon` hours after `history` (hourly kg, oldest first), with
/// an interval at `level`: MSTL (periods of a day and a week) with an
/// automatically chosen non-seasonal ETS for the trend.
///
/// MSTL's interval is its trend model's, which leaves out the error of the
/// seasonal pattern itself and so covers too little. With a week of history
/// to spare, the interval is calibrated on it (split conformal): the model
/// is fitted without the last week, the last week's errors are measured in
/// half-widths of that fit's interval, and the final interval is the
/// `level` quantile of those errors (within [1/`MAX_WIDENING`,
/// `MAX_WIDENING`]) times the final fit's half-widths.
///
/// The point's level is a combination: MSTL's shape, scaled so that its
/// next week's total is the mean of MSTL's own total and the mean weekly
/// total of the last [`RECENT_WEEKS`] whole weeks. MSTL's trend follows the
/// last hours, which for a family of a few orders a day makes its week's
/// total as noisy as last week's; the weeks' mean is steadier but follows a
/// real change of level only over four weeks; half of each follows a change
/// at half its size in the first week (`docs/benchmarks.md`, 2026-12-06).
/// Demand is never negative, so neither is the forecast or its interval.
pub fn forecast(history: &[f64], horizon: usize, level: f64) -> Result<Forecast, OutlookError> {
    if history.len() < MIN_HISTORY {
        return Err(OutlookError::TooShort { have: history.len(), need: MIN_HISTORY });
    }
    let (point, half) = leveled(history, horizon, level)?;
    let scale = if history.len() >= MIN_HISTORY + WEEK {
        let (fit, actual) = history.split_at(history.len() - WEEK);
        let (p, h) = leveled(fit, WEEK, level)?;
        let mut scores: Vec<f64> = actual.iter().zip(p.iter().zip(&h)).map(|(y, (p, h))| (y - p).abs() / h.max(f64::EPSILON)).collect();
        scores.sort_by(f64::total_cmp);
        scores[((scores.len() as f64 * level).ceil() as usize).clamp(1, scores.len()) - 1].clamp(1.0 / MAX_WIDENING, MAX_WIDENING)
    } else {
        1.0
    };
    Ok(Forecast {
        level,
        lower: point.iter().zip(&half).map(|(p, h)| non_negative(p - scale * h)).collect(),
        upper: point.iter().zip(&half).map(|(p, h)| non_negative(p + scale * h)).collect(),
        point: point.into_iter().map(non_negative).collect(),
    })
}

/// Demand is never negative; a fit that diverged says nothing.
fn non_negative(x: f64) -> f64 {
    if x.is_finite() { x.max(0.0) } else { 0.0 }
}

/// MSTL's point forecast, non-negative and at the combined level (see
/// [`forecast`]), and MSTL's half-widths at `level`. The level is set on a
/// whole week of forecast, whatever the horizon, so a shorter horizon is the
/// start of the week's forecast.
fn leveled(history: &[f64], horizon: usize, level: f64) -> Result<(Vec<f64>, Vec<f64>), OutlookError> {
    let (mut point, mut half) = mstl(history, horizon.max(WEEK), level)?;
    point.iter_mut().for_each(|p| *p = non_negative(*p));
    let model = point[..WEEK].iter().sum::<f64>();
    let weeks = (history.len() / WEEK).min(RECENT_WEEKS);
    let recent = history[history.len() - weeks * WEEK..].iter().sum::<f64>() / weeks as f64;
    let target = (model + recent) / 2.0;
    if model > 0.0 {
        point.iter_mut().for_each(|p| *p *= target / model);
    } else {
        // No shape to scale: the target spread evenly.
        point.iter_mut().for_each(|p| *p = target / WEEK as f64);
    }
    point.truncate(horizon);
    half.truncate(horizon);
    Ok((point, half))
}

/// MSTL's point forecast and the half-widths of its interval at `level`.
fn mstl(history: &[f64], horizon: usize, level: f64) -> Result<(Vec<f64>, Vec<f64>), OutlookError> {
    let trend = AutoETS::non_seasonal().into_trend_model();
    let model = MSTLModel::new(vec![DAY, WEEK], trend);
    let fitted = model.fit(history).map_err(|e| OutlookError::Model(e.to_string()))?;
    let f = fitted.predict(horizon, level).map_err(|e| OutlookError::Model(e.to_string()))?;
    let i = f.intervals.ok_or_else(|| OutlookError::Model("no prediction intervals".into()))?;
    let half = i.lower.iter().zip(&i.upper).map(|(l, u)| ((u - l) / 2.0).max(0.0)).collect();
    Ok((f.point, half))
}

/// The seasonal-naive forecast: each hour as the same hour a week before.
pub fn seasonal_naive(history: &[f64], horizon: usize) -> Vec<f64> {
    let n = history.len();
    (0..horizon).map(|h| if n >= WEEK { history[n - WEEK + h % WEEK] } else { 0.0 }).collect()
}

/// Mean absolute error of the seasonal-naive forecast within `history`: the
/// scale of MASE (a forecast as good as last week's pattern scores 1).
pub fn naive_scale(history: &[f64]) -> Option<f64> {
    (history.len() > WEEK).then(|| history[WEEK..].iter().zip(history).map(|(y, y0)| (y - y0).abs()).sum::<f64>() / (history.len() - WEEK) as f64)
}

fn mae(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len().max(1) as f64
}

/// Scores over rolling origins: MASE of the model and of the seasonal-naive
/// baseline (each origin's errors over its horizon scaled by its history's
/// naive scale, then averaged), how many outcomes fell within the model's
/// interval, and the error of the horizon's total, which is what a
/// capacity-gap alert compares with supply: |forecast total - actual
/// total| / actual total, averaged over the origins with any demand.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Backtest {
    pub origins: usize,
    pub mase: f64,
    pub naive_mase: f64,
    pub inside: usize,
    pub outcomes: usize,
    pub total_error: f64,
    pub naive_total_error: f64,
    pub totalled: usize,
}

impl Backtest {
    /// Adds one origin: its history, what followed (as long as the forecast), and the model's forecast.
    pub fn add(&mut self, history: &[f64], actual: &[f64], f: &Forecast) {
        let Some(scale) = naive_scale(history).filter(|s| *s > 0.0) else { return };
        let n = actual.len().min(f.point.len());
        let (actual, point) = (&actual[..n], &f.point[..n]);
        let naive = seasonal_naive(history, n);
        let k = self.origins as f64;
        self.mase = (self.mase * k + mae(point, actual) / scale) / (k + 1.0);
        self.naive_mase = (self.naive_mase * k + mae(&naive, actual) / scale) / (k + 1.0);
        self.origins += 1;
        let total = actual.iter().sum::<f64>();
        if total > 0.0 {
            let t = self.totalled as f64;
            let off = |f: &[f64]| (f.iter().sum::<f64>() - total).abs() / total;
            self.total_error = (self.total_error * t + off(point)) / (t + 1.0);
            self.naive_total_error = (self.naive_total_error * t + off(&naive)) / (t + 1.0);
            self.totalled += 1;
        }
        self.inside += actual.iter().zip(f.lower.iter().zip(&f.upper)).filter(|(y, (lo, hi))| lo <= y && y <= hi).count();
        self.outcomes += n;
    }

    /// Share of outcomes within the interval.
    pub fn coverage(&self) -> f64 {
        self.inside as f64 / self.outcomes.max(1) as f64
    }
}

/// A gap closes only once forecast supply exceeds forecast demand by this
/// share of the demand: a gap hovering around zero is one episode, not an
/// alert every refit.
pub const CLEAR_MARGIN: f64 = 0.05;

/// What the next 7 days look like in one cluster for one family (kg).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Outlook {
    /// Forecast demand placed over the horizon.
    pub demand_kg: f64,
    /// Capacity declared and not yet allocated, now.
    pub remaining_kg: f64,
    /// Forecast capacity declared over the horizon.
    pub expected_kg: f64,
}

impl Outlook {
    /// Demand beyond what remains and is expected (negative: a surplus).
    pub fn gap_kg(&self) -> f64 {
        self.demand_kg - (self.remaining_kg + self.expected_kg)
    }
}

/// A capacity-gap episode of one cell: open from the refit that first found
/// the gap until the one that finds it closed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Episode {
    /// Event time (ms) of the refit that opened it: with the cell, the alert's id.
    pub since_ms: i64,
}

/// What a refit changes about a cell's alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to say: no gap and none open, or the open one goes on.
    Quiet,
    /// A gap found: an episode opens (raise its alert once).
    Raise(Episode),
    /// The open episode's gap closed (clear its alert).
    Clear(Episode),
}

impl Episode {
    /// The step from the cell's open episode (if any) for a refit at `at_ms` that forecasts `outlook`.
    pub fn step(open: Option<&Episode>, outlook: &Outlook, at_ms: i64) -> Step {
        let gap = outlook.gap_kg();
        match open {
            None if gap > 0.0 => Step::Raise(Episode { since_ms: at_ms }),
            Some(e) if gap < -CLEAR_MARGIN * outlook.demand_kg => Step::Clear(e.clone()),
            _ => Step::Quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weeks of hourly demand with a daily and a weekly pattern and a little
    /// deterministic noise.
    fn seasonal(weeks: usize, noise: f64) -> Vec<f64> {
        (0..weeks * WEEK)
            .map(|t| {
                let (hour, day) = (t % DAY, (t / DAY) % 7);
                let work = if (8..18).contains(&hour) { 1.3 } else { 0.786 };
                let week = [1.12, 1.12, 1.12, 1.12, 1.12, 0.8, 0.6][day];
                let wobble = ((t as f64 * 12.9898).sin() * 43_758.547).fract() * noise;
                1_000.0 * work * week + wobble
            })
            .collect()
    }

    #[test]
    fn a_clean_daily_and_weekly_pattern_is_forecast_within_its_interval() {
        let y = seasonal(6, 20.0);
        let (history, actual) = y.split_at(4 * WEEK);
        let f = forecast(history, HORIZON, LEVEL).unwrap();
        assert_eq!((f.point.len(), f.lower.len(), f.upper.len()), (HORIZON, HORIZON, HORIZON));
        assert!(f.lower.iter().zip(&f.point).zip(&f.upper).all(|((l, p), u)| l <= p && p <= u && *l >= 0.0));
        let mut b = Backtest::default();
        b.add(history, &actual[..HORIZON], &f);
        assert!(b.mase < 1.0, "the model should beat nothing less than last week's pattern here: {b:?}");
        assert!(b.coverage() > 0.6, "{b:?}");
    }

    #[test]
    fn the_same_history_gives_the_same_forecast() {
        let y = seasonal(3, 50.0);
        assert_eq!(forecast(&y, 48, LEVEL).unwrap(), forecast(&y, 48, LEVEL).unwrap());
    }

    #[test]
    fn the_weeks_total_is_half_the_models_and_half_the_last_four_weeks() {
        // Five weeks: the first is left out, three at the pattern, the last at three times it.
        let mut y = seasonal(5, 20.0);
        y[4 * WEEK..].iter_mut().for_each(|v| *v *= 3.0);
        let recent = y[WEEK..].iter().sum::<f64>() / 4.0;
        let (p, _) = mstl(&y, WEEK, LEVEL).unwrap();
        let model = p.iter().map(|v| v.max(0.0)).sum::<f64>();
        let f = forecast(&y, HORIZON, LEVEL).unwrap();
        assert!((f.total() - (model + recent) / 2.0).abs() < 1e-6 * recent, "{} against ({model} + {recent}) / 2", f.total());
        assert!(recent < f.total() && f.total() < model, "a rise is followed, at half its size: {recent} < {} < {model}", f.total());
        let day = forecast(&y, DAY, LEVEL).unwrap();
        assert_eq!((&day.point[..], &day.lower[..], &day.upper[..]), (&f.point[..DAY], &f.lower[..DAY], &f.upper[..DAY]), "a day's forecast is the week's first day");
    }

    #[test]
    fn too_little_history_is_an_error_not_a_guess() {
        assert_eq!(forecast(&[1.0; 100], HORIZON, LEVEL), Err(OutlookError::TooShort { have: 100, need: MIN_HISTORY }));
    }

    #[test]
    fn seasonal_naive_repeats_last_week_and_scales_mase() {
        let y: Vec<f64> = (0..2 * WEEK).map(|t| (t % WEEK) as f64).collect();
        assert_eq!(seasonal_naive(&y, 3), vec![0.0, 1.0, 2.0]);
        assert_eq!(naive_scale(&y), Some(0.0), "a pure weekly pattern is what the naive forecast gets exactly");
        let f = Forecast { level: LEVEL, point: vec![1.0; 4], lower: vec![0.0; 4], upper: vec![2.0; 4] };
        let mut b = Backtest::default();
        b.add(&y, &[0.0, 1.0, 2.0, 3.0], &f);
        assert_eq!(b.origins, 0, "an origin whose history has no naive error cannot be scaled");
    }

    #[test]
    fn the_horizon_total_is_scored_against_what_followed() {
        // Last week's first hour was a spike; what follows is flat.
        let history: Vec<f64> = (0..2 * WEEK).map(|t| if t == WEEK { 5.0 } else { 1.0 }).collect();
        let f = Forecast { level: LEVEL, point: vec![2.0, 2.0, 0.0, 0.0], lower: vec![0.0; 4], upper: vec![3.0; 4] };
        let mut b = Backtest::default();
        b.add(&history, &[1.0; 4], &f);
        assert_eq!((b.totalled, b.total_error, b.naive_total_error), (1, 0.0, 1.0), "forecast total 4 against 4; last week's 8 against 4: {b:?}");
        b.add(&history, &[0.0; 4], &f);
        assert_eq!(b.totalled, 1, "a horizon without demand has no relative total error: {b:?}");
    }

    #[test]
    fn an_episode_opens_once_and_clears_with_a_margin() {
        let short = Outlook { demand_kg: 1_000.0, remaining_kg: 300.0, expected_kg: 500.0 };
        let Step::Raise(e) = Episode::step(None, &short, 10) else { panic!("a gap of 200 kg opens an episode") };
        assert_eq!(Episode::step(Some(&e), &short, 20), Step::Quiet, "an open gap is not raised again");
        let just = Outlook { expected_kg: 720.0, ..short };
        assert_eq!(Episode::step(Some(&e), &just, 30), Step::Quiet, "a 2 % surplus is within the margin");
        let ample = Outlook { expected_kg: 800.0, ..short };
        assert_eq!(Episode::step(Some(&e), &ample, 40), Step::Clear(e.clone()));
        assert_eq!(Episode::step(None, &ample, 50), Step::Quiet);
    }

    proptest::proptest! {
        /// Whatever the numbers, a step never raises over an open episode or clears none.
        #[test]
        fn steps_follow_the_episode(d in 0.0f64..1e9, r in 0.0f64..1e9, x in 0.0f64..1e9, open in proptest::bool::ANY) {
            let o = Outlook { demand_kg: d, remaining_kg: r, expected_kg: x };
            let e = Episode { since_ms: 1 };
            match Episode::step(open.then_some(&e), &o, 2) {
                Step::Raise(_) => proptest::prop_assert!(!open && o.gap_kg() > 0.0),
                Step::Clear(_) => proptest::prop_assert!(open && o.gap_kg() < 0.0),
                Step::Quiet => {
                    let stays = if open { o.gap_kg() >= -CLEAR_MARGIN * d } else { o.gap_kg() <= 0.0 };
                    proptest::prop_assert!(stays);
                }
            }
        }
    }
}
