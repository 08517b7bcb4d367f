//! Per-key rate limits (`--rate-limit`, `--rate-limit-burst`): each caller may make a burst of
//! requests at once, then one every 1/rate seconds; past that it gets 429 with a Retry-After
//! header saying when the next request will be let through. One noisy application then cannot
//! take the server from the others (the rerank queue's own 429 protects the server as a whole).
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::auth::Caller;
use crate::config::Config;
use crate::error::ApiError;

pub struct RateLimits {
    /// None when there is no limit.
    limiter: Option<(DefaultKeyedRateLimiter<Caller>, f64)>,
}

impl RateLimits {
    pub fn new(config: &Config) -> RateLimits {
        let limiter = config.rate_limit.map(|rate| {
            // `Config::check` has refused a rate that is not positive and finite, and a burst of
            // 0; the cast saturates.
            let burst = config.rate_limit_burst.unwrap_or(rate.ceil() as u32);
            // A period that rounds to 0 ns (a rate past 10^9 a second) is no limit at all.
            let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate))
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
            (DefaultKeyedRateLimiter::keyed(quota), rate)
        });
        RateLimits { limiter }
    }

    /// Spends one request of `caller`'s allowance.
    pub fn check(&self, caller: Caller) -> Result<(), Limited> {
        let Some((limiter, rate)) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&caller).map_err(|not_until| {
            // Whole seconds, rounded up: a client that waits that long is let through.
            let wait = not_until.wait_time_from(limiter.clock().now());
            Limited {
                rate: *rate,
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}

/// A request over its caller's rate limit: 429, with Retry-After in seconds.
pub struct Limited {
    rate: f64,
    retry_after: u64,
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let Limited { rate, retry_after } = self;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "over this key's rate limit of {rate} requests a second (--rate-limit); retry in \
                 {retry_after} s"
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after));
        response
    }
}
