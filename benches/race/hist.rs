//! Latency histogram, HDR-like: exact below 2048 µs, then 1024 buckets per power of two
//! (under 0.1 % error). Workers record into one each and send it to the parent as text,
//! where they are merged; percentiles come from the merged counts.

/// Values below this (µs) have a bucket each.
const LINEAR: u64 = 2048;
/// Sub-buckets per power of two above `LINEAR`.
const SUB_BITS: u32 = 10;

#[derive(Default, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // ≥ 11
    let sub = (us >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (LINEAR + u64::from(exp - 11) * (1 << SUB_BITS) + sub) as usize
}

fn value(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let exp = 11 + (index - LINEAR) / (1 << SUB_BITS);
    let sub = (index - LINEAR) % (1 << SUB_BITS);
    ((1 << SUB_BITS) + sub) << (exp - u64::from(SUB_BITS))
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        let i = index(us);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    pub fn merge(&mut self, other: &Hist) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (i, c) in other.counts.iter().enumerate() {
            self.counts[i] += c;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn max_us(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), in µs; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total.max(1));
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }

    /// `max;index:count,…` (non-zero buckets only), one token without spaces.
    pub fn encode(&self) -> String {
        let buckets: Vec<String> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| format!("{i}:{c}"))
            .collect();
        format!("{};{}", self.max, buckets.join(","))
    }

    pub fn decode(text: &str) -> Hist {
        let mut hist = Hist::default();
        let (max, buckets) = text.split_once(';').unwrap_or(("0", ""));
        for pair in buckets.split(',').filter(|p| !p.is_empty()) {
            let (i, c) = pair.split_once(':').unwrap_or(("0", "0"));
            let (i, c): (usize, u64) = (i.parse().unwrap_or(0), c.parse().unwrap_or(0));
            if i >= hist.counts.len() {
                hist.counts.resize(i + 1, 0);
            }
            hist.counts[i] += c;
            hist.total += c;
        }
        hist.max = max.parse().unwrap_or(0);
        hist
    }
}
