use super::*;

const FAIL: Outcome = Outcome::Failure(FailureKind::Status5xx);
const S: Duration = Duration::from_secs(1);

fn id(i: u32) -> EndpointId {
    EndpointId::new(i)
}

/// Reports `n` failures for `e` at `now`; returns whether the last one ejected it.
fn fail(d: &mut OutlierDetector, e: u32, n: u32, now: Instant) -> bool {
    (0..n)
        .map(|_| d.report(id(e), FAIL, now))
        .last()
        .unwrap_or(false)
}

#[test]
fn defaults_match_the_documented_values() {
    let c = OutlierConfig::default();
    assert_eq!(c.consecutive_failures, 5);
    assert_eq!(c.base_ejection_time, 30 * S);
    assert_eq!(c.max_ejection_time, 300 * S);
    assert_eq!(c.max_ejection_percent, 50);
}

#[test]
fn ejects_after_consecutive_failures_of_any_kind() {
    let t = Instant::now();
    let mut d = OutlierDetector::new(OutlierConfig::default(), 4);
    d.report(id(1), Outcome::Failure(FailureKind::ConnectFailure), t);
    d.report(id(1), Outcome::Failure(FailureKind::Timeout), t);
    assert!(!fail(&mut d, 1, 2, t));
    assert_eq!(d.consecutive_failures(id(1)), 4);
    assert!(!d.is_ejected(id(1)));
    assert!(d.report(id(1), FAIL, t));
    assert!(d.is_ejected(id(1)));
    assert_eq!(d.ejected_until(id(1)), Some(t + 30 * S));
    assert!(!d.is_ejected(id(0)));
    let stats = d.stats();
    assert_eq!((stats.ejections_total, stats.currently_ejected), (1, 1));
}

#[test]
fn a_success_resets_the_failure_count() {
    let t = Instant::now();
    let mut d = OutlierDetector::new(OutlierConfig::default(), 2);
    assert!(!fail(&mut d, 0, 4, t));
    d.report(id(0), Outcome::Success, t);
    assert_eq!(d.consecutive_failures(id(0)), 0);
    assert!(!fail(&mut d, 0, 4, t));
    assert!(!d.is_ejected(id(0)));
    assert!(fail(&mut d, 0, 1, t));
}

#[test]
fn unejects_when_the_time_has_passed() {
    let t = Instant::now();
    let mut d = OutlierDetector::new(OutlierConfig::default(), 2);
    assert!(fail(&mut d, 0, 5, t));
    d.refresh(t + 30 * S - Duration::from_nanos(1));
    assert!(d.is_ejected(id(0)));
    d.refresh(t + 30 * S);
    assert!(!d.is_ejected(id(0)));
    assert_eq!(d.ejected_until(id(0)), None);
    assert_eq!(d.consecutive_failures(id(0)), 0);
    assert_eq!(d.stats().currently_ejected, 0);
    assert_eq!(d.stats().ejections_total, 1);
    // A report also un-ejects first, then counts.
    assert!(fail(&mut d, 0, 5, t + 40 * S));
    assert!(!fail(&mut d, 0, 1, t + 40 * S + 60 * S));
    assert_eq!(d.consecutive_failures(id(0)), 1);
}

#[test]
fn reports_while_ejected_are_ignored_and_unknown_ids_too() {
    let t = Instant::now();
    let mut d = OutlierDetector::new(OutlierConfig::default(), 2);
    assert!(fail(&mut d, 0, 5, t));
    assert!(!fail(&mut d, 0, 20, t + S));
    d.report(id(0), Outcome::Success, t + S);
    assert_eq!(d.ejected_until(id(0)), Some(t + 30 * S));
    assert_eq!(d.consecutive_failures(id(0)), 0);
    assert!(!fail(&mut d, 9, 10, t));
    assert!(!d.is_ejected(id(9)));
    assert_eq!(d.consecutive_failures(id(9)), 0);
}

#[test]
fn ejection_time_grows_with_each_ejection_up_to_the_max() {
    let mut t = Instant::now();
    let mut d = OutlierDetector::new(OutlierConfig::default(), 2);
    let mut durations = Vec::new();
    for _ in 0..12 {
        assert!(fail(&mut d, 0, 5, t));
        let until = d.ejected_until(id(0)).unwrap();
        durations.push((until - t).as_secs());
        t = until; // fail again the moment it comes back
    }
    assert_eq!(
        durations,
        [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
    );
}

#[test]
fn the_multiplier_decays_while_the_endpoint_stays_healthy() {
    let t = Instant::now();
    let mut d = OutlierDetector::new(OutlierConfig::default(), 2);
    assert!(fail(&mut d, 0, 5, t)); // 30 s, back at t+30
    assert!(fail(&mut d, 0, 5, t + 30 * S)); // 60 s, back at t+90
    assert!(fail(&mut d, 0, 5, t + 90 * S)); // 90 s, back at t+180
    // Healthy for 2 * 300 s: the multiplier goes from 3 to 1, so the next is the second.
    let later = t + 180 * S + 600 * S;
    assert!(fail(&mut d, 0, 5, later));
    assert_eq!(d.ejected_until(id(0)), Some(later + 60 * S));
    // Healthy for less than 300 s: no decay, the multiplier keeps growing.
    let soon = later + 60 * S + 299 * S;
    assert!(fail(&mut d, 0, 5, soon));
    assert_eq!(d.ejected_until(id(0)), Some(soon + 90 * S));
}

#[test]
fn at_most_max_ejection_percent_are_ejected_at_once() {
    let t = Instant::now();
    let mut d = OutlierDetector::new(OutlierConfig::default(), 4);
    assert!(fail(&mut d, 0, 5, t));
    assert!(fail(&mut d, 1, 5, t + S));
    assert!(!fail(&mut d, 2, 5, t + S)); // would be 75%
    assert!(!d.is_ejected(id(2)));
    assert!(!fail(&mut d, 2, 1, t + 2 * S)); // still refused, count kept
    assert_eq!(d.consecutive_failures(id(2)), 6);
    let stats = d.stats();
    assert_eq!((stats.currently_ejected, stats.ejections_capped), (2, 2));
    // Once endpoint 0 is back, endpoint 2's next failure ejects it.
    assert!(fail(&mut d, 2, 1, t + 30 * S));
    assert_eq!(d.stats().currently_ejected, 2);
    assert!(!d.is_ejected(id(0)));
}

#[test]
fn the_cap_rounds_down_and_100_percent_allows_all() {
    let t = Instant::now();
    let mut single = OutlierDetector::new(OutlierConfig::default(), 1);
    assert!(!fail(&mut single, 0, 50, t));
    let mut three = OutlierDetector::new(OutlierConfig::default(), 3);
    assert!(fail(&mut three, 0, 5, t));
    assert!(!fail(&mut three, 1, 5, t)); // 2 of 3 is above 50%
    let all = OutlierConfig {
        max_ejection_percent: 200,
        ..OutlierConfig::default()
    };
    let mut d = OutlierDetector::new(all, 3);
    for e in 0..3 {
        assert!(fail(&mut d, e, 5, t));
    }
    assert_eq!(d.stats().currently_ejected, 3);
}

#[test]
fn a_threshold_of_zero_disables_ejection() {
    let t = Instant::now();
    let off = OutlierConfig {
        consecutive_failures: 0,
        ..OutlierConfig::default()
    };
    let mut d = OutlierDetector::new(off, 2);
    assert!(!fail(&mut d, 0, 100, t));
    assert_eq!(d.stats(), OutlierStats::default());
}
