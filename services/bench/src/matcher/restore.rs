//! `orelink bench restore`: a book rebuilt from its input, and from its snapshot.

use super::*;

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub open_orders: usize,
    pub open_capacities: usize,
    /// The restored book's snapshot: its size, the time to take it, and a
    /// restore from it (read from the snapshot topic, loaded, nothing left to replay).
    pub snapshot_bytes: usize,
    pub snapshot_take_ms: f64,
    pub from_snapshot_seconds: f64,
}

/// Writes `events` events to partition 0 of a fresh market topic and times the replay.
pub async fn restore(base: &Config, reference: &Reference, events: usize, log: &(dyn Fn(&str) + Sync)) -> Result<RestoreReport, BenchError> {
    let cfg = namespace(base, reference, "restore").await?;
    let w = steady_state(events / 100, events - events / 100 * 12, 99);
    let inputs: Vec<Input> = w.warm.into_iter().chain(w.stream).take(events).collect();
    log(&format!("encoding {} events", inputs.len()));
    let encoded = encode(&cfg, reference, &inputs).await?;
    let topic = format!("{}orelink.market.v1", cfg.namespace);
    let producer = producer(&cfg)?;
    log(&format!("writing them to {topic} partition 0"));
    let mut pending = std::collections::VecDeque::new();
    for e in &encoded {
        let headers = OwnedHeaders::new().insert(Header { key: SOURCE_HEADER, value: Some(e.contract_topic.as_bytes()) });
        let rec = FutureRecord::to(&topic).key(&e.key).payload(&e.bytes).partition(0).headers(headers);
        pending.push_back(producer.send_result(rec).map_err(|(e, _)| e)?);
        while pending.len() > 50_000 {
            pending.pop_front().expect("non-empty").await.map_err(|_| setup("producer gone"))?.map_err(|(e, _)| e)?;
        }
    }
    for d in pending {
        d.await.map_err(|_| setup("producer gone"))?.map_err(|(e, _)| e)?;
    }
    let codec = orelink_platform::codec(&cfg, reference).map_err(setup)?;
    let network = Arc::new(Network::new(&reference.topology));
    let rc = cfg.kafka.reader_config("bench-restore", &format!("{}restore", cfg.namespace));
    let snapshot_rc = rc.clone();
    log("restoring");
    let rt = tokio::runtime::Handle::current();
    let n = encoded.len() as i64;
    let (secs, engine, count) = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let r = orelink_matcher::restore(&rc, &topic, 0, n, &codec, &network, &rt);
        (t0.elapsed().as_secs_f64(), r)
    })
    .await
    .map(|(s, r)| r.map(|(e, c)| (s, e, c)))
    .map_err(setup)?
    .map_err(setup)?;
    let summary = engine.summary();

    log("snapshotting the restored book, then restoring from the snapshot");
    let t0 = Instant::now();
    let bytes = engine.snapshot();
    let snapshot_take_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let snapshot_topic = format!("{}{}", cfg.namespace, topics::MATCHER_SNAPSHOTS);
    let store = orelink_matcher::snapshots::Store::new(&cfg.kafka.producer_config("bench"), snapshot_topic.clone())?;
    store.publish(0, n, &bytes);
    store.flush(Duration::from_secs(60));
    let network = engine.network().clone();
    let catalog = reference.catalog.clone();
    let from_snapshot = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let loaded = orelink_matcher::snapshots::load(&snapshot_rc, &snapshot_topic, 0, n, &network, &catalog, orelink_domain::matching::DEDUP_HORIZON_MS);
        loaded.map(|(e, at)| (t0.elapsed().as_secs_f64(), e.snapshot(), at))
    })
    .await
    .map_err(setup)?
    .ok_or_else(|| setup("the snapshot just written could not be loaded"))?;
    if from_snapshot.1 != bytes || from_snapshot.2 != n {
        return Err(setup("the book loaded from the snapshot differs from the replayed one"));
    }
    drop_namespace(&cfg).await;
    Ok(RestoreReport {
        events: count,
        seconds: secs,
        events_per_s: count as f64 / secs,
        open_orders: summary.open_orders,
        open_capacities: summary.open_capacities,
        snapshot_bytes: bytes.len(),
        snapshot_take_ms,
        from_snapshot_seconds: from_snapshot.0,
    })
}

