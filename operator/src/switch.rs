//! The live tracing-mode switch as a pure state machine (make-before-break).
//!
//! The reconciler calls [`plan`] once per reconcile with the desired mode (spec), the active mode
//! (status) and a few facts it observed in the cluster, and gets back a [`Step`]: which endpoint the
//! pipeline workloads are wired to now, whether the collector objects must exist, what to report,
//! and whether a switch just completed. No state lives here between calls; everything that must
//! survive a restart is in `status.tracing.activeMode` or can be read back from the pods.
//!
//! * direct → collector: create the collector, wait until it is available, then roll the services
//!   to it; done when no pipeline pod exports to Jaeger directly any more.
//! * collector → direct: roll the services to Jaeger, wait until no pod uses the collector (old
//!   pods flush their span queues while terminating), then delete the collector objects.
//!
//! Flipping the spec back mid-switch is just another input: the same rules drive the workloads
//! back, and the collector is never deleted while a pod still exports to it.

use crate::api::TracingMode;

/// What the reconciler observed in the cluster this round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The collector Deployment exists.
    pub collector_deployed: bool,
    /// The collector Deployment is `Available` with all replicas updated.
    pub collector_available: bool,
    /// At least one pipeline pod (any phase, including terminating) is wired to Jaeger directly.
    pub pods_on_jaeger: bool,
    /// At least one pipeline pod (any phase, including terminating) is wired to the collector.
    pub pods_on_collector: bool,
    /// Every pipeline Deployment has rolled out its current template (observed generation,
    /// updated and available replicas all match).
    pub pipeline_rolled_out: bool,
}

/// Whether the collector objects (ConfigMap, Deployment, Service) must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectorPresence {
    /// Apply them.
    Present,
    /// Delete them (a no-op when they are already gone).
    Absent,
}

/// Where the switch stands; every phase but `Settled` is reported as `Progressing=True` with
/// [`Phase::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No switch in progress.
    Settled,
    /// direct → collector: the collector Deployment does not exist yet.
    CreatingCollector,
    /// direct → collector: the collector exists but is not available yet.
    WaitingForCollector,
    /// Pipeline pods are being rolled to the collector.
    RollingToCollector,
    /// Pipeline pods are being rolled to Jaeger.
    RollingToJaeger,
    /// All Deployments point to Jaeger, but pods wired to the collector are still terminating.
    DrainingCollector,
}

impl Phase {
    /// `Progressing` condition reason (None when settled).
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Self::Settled => None,
            Self::CreatingCollector => Some("CreatingCollector"),
            Self::WaitingForCollector => Some("WaitingForCollector"),
            Self::RollingToCollector => Some("RollingToCollector"),
            Self::RollingToJaeger => Some("RollingToJaeger"),
            Self::DrainingCollector => Some("DrainingCollector"),
        }
    }

    /// Human-readable `Progressing` message.
    pub fn message(self) -> &'static str {
        match self {
            Self::Settled => "no tracing mode switch in progress",
            Self::CreatingCollector => "creating the OpenTelemetry Collector",
            Self::WaitingForCollector => {
                "waiting for the OpenTelemetry Collector to become available before rolling the services to it"
            }
            Self::RollingToCollector => {
                "rolling the pipeline services to the OpenTelemetry Collector"
            }
            Self::RollingToJaeger => "rolling the pipeline services to Jaeger",
            Self::DrainingCollector => {
                "waiting for pods that still export to the OpenTelemetry Collector to terminate before deleting it"
            }
        }
    }
}

/// A completed mode switch (emit Event `ModeSwitched`, set `switchCompletedAt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeSwitch {
    pub from: TracingMode,
    pub to: TracingMode,
}

/// What to do in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The backend every pipeline workload's OTLP endpoint points to.
    pub wiring: TracingMode,
    /// Whether the collector objects must exist.
    pub collector: CollectorPresence,
    /// Progress of the switch.
    pub phase: Phase,
    /// Value for `status.tracing.activeMode` after this reconcile.
    pub active_mode: TracingMode,
    /// Set in the one reconcile where a switch finishes.
    pub completed: Option<ModeSwitch>,
}

impl Step {
    /// The settled state for `mode`: what `render` shows and what a finished switch converges to.
    pub fn settled(mode: TracingMode) -> Self {
        Self {
            wiring: mode,
            collector: match mode {
                TracingMode::Direct => CollectorPresence::Absent,
                TracingMode::Collector => CollectorPresence::Present,
            },
            phase: Phase::Settled,
            active_mode: mode,
            completed: None,
        }
    }

    /// True while a switch (or a reverted one) is still converging.
    pub fn in_progress(&self) -> bool {
        self.phase != Phase::Settled
    }
}

/// Decide the next step of the mode switch.
///
/// `active` is `status.tracing.activeMode`; when it is missing (new object, or status lost) it is
/// read back from the pods so that a lost status never breaks a running pipeline.
pub fn plan(desired: TracingMode, active: Option<TracingMode>, observed: Observed) -> Step {
    let active = active.unwrap_or_else(|| infer_active(desired, observed));
    let (wiring, collector, phase) = match desired {
        TracingMode::Collector => toward_collector(active, observed),
        TracingMode::Direct => toward_jaeger(observed),
    };
    let done = phase == Phase::Settled;
    let active_mode = if done { desired } else { active };
    Step {
        wiring,
        collector,
        phase,
        active_mode,
        completed: (done && active != desired).then_some(ModeSwitch {
            from: active,
            to: desired,
        }),
    }
}

/// With no recorded active mode, the pods say which mode is live. Without pods (a new object)
/// nothing exports yet, so the desired mode is taken as active and no switch is staged.
fn infer_active(desired: TracingMode, observed: Observed) -> TracingMode {
    match (observed.pods_on_jaeger, observed.pods_on_collector) {
        (true, false) => TracingMode::Direct,
        (false, true) => TracingMode::Collector,
        _ => desired,
    }
}

fn toward_collector(active: TracingMode, o: Observed) -> (TracingMode, CollectorPresence, Phase) {
    let present = CollectorPresence::Present;
    // Roll to the collector only once it is available. Once some pods already use it, keep going
    // even if it blips: flapping the wiring back would restart every pod twice.
    let roll = active == TracingMode::Collector || o.collector_available || o.pods_on_collector;
    if !roll {
        let phase = if o.collector_deployed {
            Phase::WaitingForCollector
        } else {
            Phase::CreatingCollector
        };
        return (TracingMode::Direct, present, phase);
    }
    let phase = if o.pods_on_jaeger {
        Phase::RollingToCollector
    } else {
        Phase::Settled
    };
    (TracingMode::Collector, present, phase)
}

fn toward_jaeger(o: Observed) -> (TracingMode, CollectorPresence, Phase) {
    // Jaeger always exists, so the services can be rolled to it at once; the collector stays
    // until no pod exports to it.
    if !o.pods_on_collector {
        return (
            TracingMode::Direct,
            CollectorPresence::Absent,
            Phase::Settled,
        );
    }
    let phase = if o.pipeline_rolled_out {
        Phase::DrainingCollector
    } else {
        Phase::RollingToJaeger
    };
    (TracingMode::Direct, CollectorPresence::Present, phase)
}

#[cfg(test)]
mod tests {
    use super::{CollectorPresence::*, Phase::*, *};
    use TracingMode::{Collector, Direct};

    /// Pods all on Jaeger, rolled out, no collector.
    fn direct_settled() -> Observed {
        Observed {
            pods_on_jaeger: true,
            pipeline_rolled_out: true,
            ..Observed::default()
        }
    }

    /// Pods all on the collector, rolled out, collector available.
    fn collector_settled() -> Observed {
        Observed {
            collector_deployed: true,
            collector_available: true,
            pods_on_collector: true,
            pipeline_rolled_out: true,
            ..Observed::default()
        }
    }

    #[test]
    fn settled_direct_stays_put() {
        let step = plan(Direct, Some(Direct), direct_settled());
        assert_eq!(step, Step::settled(Direct));
    }

    #[test]
    fn settled_collector_stays_put() {
        let step = plan(Collector, Some(Collector), collector_settled());
        assert_eq!(step, Step::settled(Collector));
    }

    #[test]
    fn direct_to_collector_is_make_before_break() {
        // 1. Spec flipped; nothing exists yet: create the collector, pods stay on Jaeger.
        let mut o = direct_settled();
        let s = plan(Collector, Some(Direct), o);
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Direct, Present, CreatingCollector)
        );
        assert_eq!((s.active_mode, s.completed), (Direct, None));
        assert_eq!(s.phase.reason(), Some("CreatingCollector"));

        // 2. Collector Deployment created but not available: still on Jaeger.
        o.collector_deployed = true;
        let s = plan(Collector, Some(Direct), o);
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Direct, Present, WaitingForCollector)
        );

        // 3. Collector available: roll the services to it.
        o.collector_available = true;
        let s = plan(Collector, Some(Direct), o);
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Collector, Present, RollingToCollector)
        );
        assert_eq!(s.active_mode, Direct);

        // 4. Half the pods rolled.
        o.pods_on_collector = true;
        o.pipeline_rolled_out = false;
        let s = plan(Collector, Some(Direct), o);
        assert_eq!(
            (s.wiring, s.phase, s.completed),
            (Collector, RollingToCollector, None)
        );

        // 5. No pod on Jaeger any more: done, once.
        o.pods_on_jaeger = false;
        let s = plan(Collector, Some(Direct), o);
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Collector, Present, Settled)
        );
        assert_eq!(s.active_mode, Collector);
        assert_eq!(
            s.completed,
            Some(ModeSwitch {
                from: Direct,
                to: Collector
            })
        );

        // 6. Next reconcile, status now says collector: settled, no second event.
        let s = plan(Collector, Some(Collector), o);
        assert_eq!(s.completed, None);
        assert!(!s.in_progress());
    }

    #[test]
    fn collector_to_direct_drains_before_deleting() {
        // 1. Spec flipped: roll to Jaeger at once, keep the collector.
        let mut o = collector_settled();
        o.pipeline_rolled_out = false;
        let s = plan(Direct, Some(Collector), o);
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Direct, Present, RollingToJaeger)
        );
        assert_eq!((s.active_mode, s.completed), (Collector, None));

        // 2. New pods up on Jaeger, old ones still terminating (flushing to the collector).
        o.pods_on_jaeger = true;
        o.pipeline_rolled_out = true;
        let s = plan(Direct, Some(Collector), o);
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Direct, Present, DrainingCollector)
        );
        assert_eq!(s.phase.reason(), Some("DrainingCollector"));

        // 3. Last collector pod gone: delete the collector, switch complete.
        o.pods_on_collector = false;
        let s = plan(Direct, Some(Collector), o);
        assert_eq!((s.wiring, s.collector, s.phase), (Direct, Absent, Settled));
        assert_eq!(s.active_mode, Direct);
        assert_eq!(
            s.completed,
            Some(ModeSwitch {
                from: Collector,
                to: Direct
            })
        );

        // 4. Collector still reported (deletion in flight): stays absent, no second event.
        let s = plan(Direct, Some(Direct), o);
        assert_eq!(s, Step::settled(Direct));
    }

    #[test]
    fn flip_back_while_waiting_for_collector() {
        // direct → collector, collector not yet available; user flips back to direct.
        let o = Observed {
            collector_deployed: true,
            ..direct_settled()
        };
        assert_eq!(plan(Collector, Some(Direct), o).phase, WaitingForCollector);
        // No pod ever used the collector: delete it right away, nothing to report.
        let s = plan(Direct, Some(Direct), o);
        assert_eq!(s, Step::settled(Direct));
    }

    #[test]
    fn flip_back_while_rolling_to_collector() {
        // Half the pods are on the collector when the user flips back to direct.
        let o = Observed {
            collector_deployed: true,
            collector_available: true,
            pods_on_jaeger: true,
            pods_on_collector: true,
            pipeline_rolled_out: false,
        };
        assert_eq!(plan(Collector, Some(Direct), o).phase, RollingToCollector);
        let s = plan(Direct, Some(Direct), o);
        // Back to Jaeger, but the collector must stay until its pods are gone.
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Direct, Present, RollingToJaeger)
        );
        assert_eq!((s.active_mode, s.completed), (Direct, None));
        // Drained: delete; the mode never changed, so no ModeSwitched.
        let drained = Observed {
            pods_on_collector: false,
            pipeline_rolled_out: true,
            ..o
        };
        let s = plan(Direct, Some(Direct), drained);
        assert_eq!(s, Step::settled(Direct));
    }

    #[test]
    fn flip_back_while_rolling_to_jaeger() {
        // collector → direct half done; user flips back to collector.
        let o = Observed {
            collector_deployed: true,
            collector_available: true,
            pods_on_jaeger: true,
            pods_on_collector: true,
            pipeline_rolled_out: false,
        };
        assert_eq!(plan(Direct, Some(Collector), o).phase, RollingToJaeger);
        // The collector never went away, so roll straight back to it.
        let s = plan(Collector, Some(Collector), o);
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Collector, Present, RollingToCollector)
        );
        assert_eq!((s.active_mode, s.completed), (Collector, None));
        let back = Observed {
            pods_on_jaeger: false,
            pipeline_rolled_out: true,
            ..o
        };
        assert_eq!(
            plan(Collector, Some(Collector), back),
            Step::settled(Collector)
        );
    }

    #[test]
    fn flip_back_while_draining_keeps_collector() {
        // collector → direct, all Deployments on Jaeger, old pods draining; flip back.
        let o = Observed {
            collector_deployed: true,
            collector_available: true,
            pods_on_jaeger: true,
            pods_on_collector: true,
            pipeline_rolled_out: true,
        };
        assert_eq!(plan(Direct, Some(Collector), o).phase, DrainingCollector);
        let s = plan(Collector, Some(Collector), o);
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Collector, Present, RollingToCollector)
        );
    }

    #[test]
    fn collector_blip_mid_roll_does_not_flap_the_wiring() {
        let o = Observed {
            collector_deployed: true,
            collector_available: false,
            pods_on_jaeger: true,
            pods_on_collector: true,
            pipeline_rolled_out: false,
        };
        let s = plan(Collector, Some(Direct), o);
        assert_eq!((s.wiring, s.phase), (Collector, RollingToCollector));
    }

    #[test]
    fn settled_collector_with_collector_deleted_is_recreated_not_switched() {
        // Someone deleted the collector Deployment: drift correction re-applies it; the pods
        // keep their wiring (no flapping to Jaeger), and no switch is reported.
        let o = Observed {
            pods_on_collector: true,
            pipeline_rolled_out: true,
            ..Observed::default()
        };
        assert_eq!(
            plan(Collector, Some(Collector), o),
            Step::settled(Collector)
        );
    }

    #[test]
    fn new_object_deploys_the_desired_mode_directly() {
        for mode in [Direct, Collector] {
            assert_eq!(plan(mode, None, Observed::default()), Step::settled(mode));
        }
    }

    #[test]
    fn lost_status_is_recovered_from_pods() {
        // Status wiped while pods run on the collector and the spec now says direct: the
        // collector must not be deleted before the pods have moved.
        let s = plan(Direct, None, collector_settled());
        assert_eq!(
            (s.wiring, s.collector, s.phase),
            (Direct, Present, DrainingCollector)
        );
        assert_eq!(s.active_mode, Collector);
        // Status wiped while pods run on Jaeger and the spec says collector: make-before-break.
        let s = plan(Collector, None, direct_settled());
        assert_eq!((s.wiring, s.phase), (Direct, CreatingCollector));
        // Pods agree with the spec: settled, no event.
        assert_eq!(plan(Direct, None, direct_settled()), Step::settled(Direct));
    }

    /// Exhaustive: for every input, the collector is never absent while a pod uses it, and pods
    /// are never (newly) wired to a collector that has neither been available nor used.
    #[test]
    fn invariants_hold_for_every_input() {
        let bools = [false, true];
        for desired in [Direct, Collector] {
            for active in [None, Some(Direct), Some(Collector)] {
                for cd in bools {
                    for ca in bools {
                        for pj in bools {
                            for pc in bools {
                                for ro in bools {
                                    let o = Observed {
                                        collector_deployed: cd,
                                        collector_available: ca,
                                        pods_on_jaeger: pj,
                                        pods_on_collector: pc,
                                        pipeline_rolled_out: ro,
                                    };
                                    let s = plan(desired, active, o);
                                    if pc {
                                        assert_eq!(
                                            s.collector, Present,
                                            "{desired:?} {active:?} {o:?}"
                                        );
                                    }
                                    if s.wiring == Collector {
                                        assert_eq!(s.collector, Present);
                                        assert!(
                                            ca || pc
                                                || active == Some(Collector)
                                                || active.is_none(),
                                            "wired to an unavailable, unused collector: {desired:?} {active:?} {o:?}"
                                        );
                                    }
                                    if let Some(sw) = s.completed {
                                        assert_ne!(sw.from, sw.to);
                                        assert_eq!(sw.to, desired);
                                        assert!(!s.in_progress());
                                    }
                                    if !s.in_progress() {
                                        assert_eq!(s.active_mode, desired);
                                        assert_eq!(s.wiring, desired);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
