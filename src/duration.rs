//! How durations are written on the command line, the one way for every
//! option: `10s`, `500ms`, `2m`, `1m30s`, or a number of seconds (`2.5`).

use std::time::Duration;

/// A duration, zero allowed (`-q 0`, `--hold 0`).
pub fn or_zero(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err(format!("{s:?} is not a duration")),
        Err(_) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?}: {e} (try 10s, 500ms, 2m or a number of seconds)")),
    }
}

/// A duration longer than zero, for the options where zero means nothing.
pub fn positive(s: &str) -> Result<Duration, String> {
    match or_zero(s)? {
        d if d.is_zero() => Err(format!("{s:?} is not a positive duration")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_of_writing_one() {
        assert_eq!(positive("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(positive("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(positive("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(positive("1"), Ok(Duration::from_secs(1)));
        assert!(positive("0").is_err());
        assert!(positive("0s").is_err());
        assert_eq!(or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(or_zero("0s"), Ok(Duration::ZERO));
        assert!(or_zero("-1").is_err());
        assert!(or_zero("soon").is_err());
        assert!(or_zero("inf").is_err());
    }
}
