//! The Ironic provision state machine: state and power strings exactly as the API shows
//! them, the provision verbs of `PUT /v1/nodes/{id}/states/provision`, the internal events,
//! and the transition table as plain data.
//!
//! The table is the single source of truth: the conductor's conditional database update
//! lists the valid source states by asking this table, so a transition missing here is a
//! transition the API refuses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api_version::ApiVersion;

// Short names keep the transition table one row per line.
use Event as E;
use ProvisionState as S;

/// Declares a fieldless enum whose serde, `Display` and `FromStr` forms are the given wire
/// strings, plus an `ALL` list in declaration order. One list keeps the three in step.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident, $err:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The exact wire string.
            pub const fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text, )+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[doc = concat!("A string that is not a known ", $what, ".")]
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("unknown {what}: {0:?}", what = $what)]
        pub struct $err(pub String);

        impl FromStr for $name {
            type Err = $err;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    other => Err($err(other.to_owned())),
                }
            }
        }
    };
}

wire_enum! {
    /// `provision_state` / `target_provision_state` values (`null` is `Option::None`).
    pub enum ProvisionState, UnknownProvisionState, "provision state" {
        Enroll = "enroll",
        Verifying = "verifying",
        Manageable = "manageable",
        Inspecting = "inspecting",
        InspectWait = "inspect wait",
        InspectFailed = "inspect failed",
        Cleaning = "cleaning",
        CleanWait = "clean wait",
        CleanFailed = "clean failed",
        CleanHold = "clean hold",
        Available = "available",
        Deploying = "deploying",
        /// Ironic's DEPLOYWAIT: the ramdisk is booting and will call back.
        DeployWait = "wait call-back",
        DeployFailed = "deploy failed",
        DeployHold = "deploy hold",
        Active = "active",
        Deleting = "deleting",
        Error = "error",
        Adopting = "adopting",
        AdoptFailed = "adopt failed",
        Rescuing = "rescuing",
        RescueWait = "rescue wait",
        Rescue = "rescue",
        RescueFailed = "rescue failed",
        Unrescuing = "unrescuing",
        UnrescueFailed = "unrescue failed",
        Servicing = "servicing",
        ServiceWait = "service wait",
        ServiceFailed = "service failed",
        ServiceHold = "service hold",
    }
}

wire_enum! {
    /// `power_state` values; a node whose power is unknown has `null` (`Option::None`).
    pub enum PowerState, UnknownPowerState, "power state" {
        On = "power on",
        Off = "power off",
        Error = "error",
    }
}

wire_enum! {
    /// `target` of `PUT /v1/nodes/{id}/states/power` (also `target_power_state`).
    pub enum PowerTarget, UnknownPowerTarget, "power target" {
        On = "power on",
        Off = "power off",
        Rebooting = "rebooting",
        SoftRebooting = "soft rebooting",
        SoftPowerOff = "soft power off",
    }
}

wire_enum! {
    /// `target` of `PUT /v1/nodes/{id}/states/provision`.
    pub enum ProvisionVerb, UnknownProvisionVerb, "provision verb" {
        Active = "active",
        Deploy = "deploy",
        Rebuild = "rebuild",
        Deleted = "deleted",
        Undeploy = "undeploy",
        Manage = "manage",
        Provide = "provide",
        Inspect = "inspect",
        Abort = "abort",
        Clean = "clean",
        Adopt = "adopt",
        Rescue = "rescue",
        Unrescue = "unrescue",
        Unhold = "unhold",
        Service = "service",
    }
}

wire_enum! {
    /// Events that drive the state machine. Verbs map onto some of them; the rest are
    /// raised by the conductor as work progresses (`wait`, `resume`, `done`, `fail`, …).
    pub enum Event, UnknownEvent, "provision event" {
        Manage = "manage",
        Provide = "provide",
        Clean = "clean",
        Inspect = "inspect",
        Deploy = "deploy",
        Rebuild = "rebuild",
        Delete = "delete",
        Adopt = "adopt",
        Rescue = "rescue",
        Unrescue = "unrescue",
        Service = "service",
        Abort = "abort",
        Hold = "hold",
        Unhold = "unhold",
        Wait = "wait",
        Resume = "resume",
        Done = "done",
        Fail = "fail",
    }
}

impl PowerTarget {
    /// Soft targets exist only from API 1.27 on (older requests get 406).
    pub fn min_version(self) -> ApiVersion {
        match self {
            PowerTarget::On | PowerTarget::Off | PowerTarget::Rebooting => ApiVersion::MINIMUM,
            PowerTarget::SoftRebooting | PowerTarget::SoftPowerOff => ApiVersion::new(1, 27),
        }
    }
}

impl ProvisionVerb {
    /// The lowest API microversion that accepts this verb (older requests get 406).
    pub fn min_version(self) -> ApiVersion {
        let minor = match self {
            ProvisionVerb::Active | ProvisionVerb::Rebuild | ProvisionVerb::Deleted => 1,
            ProvisionVerb::Manage | ProvisionVerb::Provide => 4,
            ProvisionVerb::Inspect => 6,
            ProvisionVerb::Abort => 13,
            ProvisionVerb::Clean => 15,
            ProvisionVerb::Adopt => 17,
            ProvisionVerb::Rescue | ProvisionVerb::Unrescue => 38,
            ProvisionVerb::Deploy | ProvisionVerb::Undeploy => 73,
            ProvisionVerb::Unhold => 85,
            ProvisionVerb::Service => 87,
        };
        ApiVersion::new(1, minor)
    }

    /// Whether `version` is new enough for this verb.
    pub fn allowed_at(self, version: ApiVersion) -> bool {
        version >= self.min_version()
    }

    /// The lowest microversion for this verb on a node in `state`: aborting a deployment
    /// that waits for its agent became possible only in 1.110.
    pub fn min_version_in(self, state: ProvisionState) -> ApiVersion {
        match (self, state) {
            (ProvisionVerb::Abort, ProvisionState::DeployWait) => ApiVersion::new(1, 110),
            _ => self.min_version(),
        }
    }
}

/// The event a provision verb raises. `deploy` and `undeploy` are the 1.73 spellings of
/// `active` and `deleted`.
pub fn verb_event(verb: ProvisionVerb) -> Event {
    match verb {
        ProvisionVerb::Active | ProvisionVerb::Deploy => Event::Deploy,
        ProvisionVerb::Rebuild => Event::Rebuild,
        ProvisionVerb::Deleted | ProvisionVerb::Undeploy => Event::Delete,
        ProvisionVerb::Manage => Event::Manage,
        ProvisionVerb::Provide => Event::Provide,
        ProvisionVerb::Inspect => Event::Inspect,
        ProvisionVerb::Abort => Event::Abort,
        ProvisionVerb::Clean => Event::Clean,
        ProvisionVerb::Adopt => Event::Adopt,
        ProvisionVerb::Rescue => Event::Rescue,
        ProvisionVerb::Unrescue => Event::Unrescue,
        ProvisionVerb::Unhold => Event::Unhold,
        ProvisionVerb::Service => Event::Service,
    }
}

/// One row of the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    pub from: ProvisionState,
    pub event: Event,
    pub to: ProvisionState,
}

const fn t(from: ProvisionState, event: Event, to: ProvisionState) -> Transition {
    Transition { from, event, to }
}

/// Every valid `(from, event) -> to`. Each `(from, event)` pair appears at most once.
///
/// Cleaning ends with `done` (automated cleaning, goes to `available`) or with `manage`
/// (manual cleaning, back to `manageable`); [`completion_event`] picks the right one from
/// the node's `target_provision_state`, so the table itself carries no conditions.
pub static TRANSITIONS: &[Transition] = &[
    // Enrollment and verification.
    t(S::Enroll, E::Manage, S::Verifying),
    t(S::Verifying, E::Done, S::Manageable),
    t(S::Verifying, E::Fail, S::Enroll),
    // Inspection.
    t(S::Manageable, E::Inspect, S::Inspecting),
    t(S::InspectFailed, E::Inspect, S::Inspecting),
    t(S::Inspecting, E::Wait, S::InspectWait),
    t(S::Inspecting, E::Done, S::Manageable),
    t(S::InspectWait, E::Done, S::Manageable),
    t(S::Inspecting, E::Fail, S::InspectFailed),
    t(S::InspectWait, E::Fail, S::InspectFailed),
    t(S::InspectWait, E::Abort, S::InspectFailed),
    t(S::InspectWait, E::Resume, S::Inspecting),
    t(S::InspectFailed, E::Manage, S::Manageable),
    // Cleaning.
    t(S::Manageable, E::Provide, S::Cleaning),
    t(S::Manageable, E::Clean, S::Cleaning),
    t(S::Cleaning, E::Wait, S::CleanWait),
    t(S::CleanWait, E::Resume, S::Cleaning),
    t(S::Cleaning, E::Done, S::Available),
    t(S::Cleaning, E::Manage, S::Manageable),
    t(S::Cleaning, E::Fail, S::CleanFailed),
    t(S::CleanWait, E::Fail, S::CleanFailed),
    t(S::CleanWait, E::Abort, S::CleanFailed),
    t(S::Cleaning, E::Hold, S::CleanHold),
    t(S::CleanWait, E::Hold, S::CleanHold),
    t(S::CleanHold, E::Unhold, S::CleanWait),
    t(S::CleanHold, E::Abort, S::CleanFailed),
    t(S::CleanFailed, E::Manage, S::Manageable),
    t(S::Available, E::Manage, S::Manageable),
    // Deployment.
    t(S::Available, E::Deploy, S::Deploying),
    t(S::Deploying, E::Wait, S::DeployWait),
    t(S::DeployWait, E::Resume, S::Deploying),
    t(S::Deploying, E::Done, S::Active),
    t(S::Deploying, E::Fail, S::DeployFailed),
    t(S::DeployWait, E::Fail, S::DeployFailed),
    t(S::DeployWait, E::Abort, S::DeployFailed),
    t(S::Deploying, E::Hold, S::DeployHold),
    t(S::DeployWait, E::Hold, S::DeployHold),
    t(S::DeployHold, E::Unhold, S::DeployWait),
    t(S::DeployHold, E::Abort, S::DeployFailed),
    t(S::DeployFailed, E::Deploy, S::Deploying),
    t(S::DeployFailed, E::Rebuild, S::Deploying),
    t(S::Active, E::Rebuild, S::Deploying),
    t(S::Error, E::Rebuild, S::Deploying),
    // Tear-down.
    t(S::Active, E::Delete, S::Deleting),
    t(S::DeployWait, E::Delete, S::Deleting),
    t(S::DeployFailed, E::Delete, S::Deleting),
    t(S::Error, E::Delete, S::Deleting),
    t(S::Rescue, E::Delete, S::Deleting),
    t(S::RescueWait, E::Delete, S::Deleting),
    t(S::RescueFailed, E::Delete, S::Deleting),
    t(S::UnrescueFailed, E::Delete, S::Deleting),
    t(S::ServiceWait, E::Delete, S::Deleting),
    t(S::ServiceFailed, E::Delete, S::Deleting),
    t(S::Deleting, E::Clean, S::Cleaning),
    t(S::Deleting, E::Fail, S::Error),
    // Adoption.
    t(S::Manageable, E::Adopt, S::Adopting),
    t(S::Adopting, E::Done, S::Active),
    t(S::Adopting, E::Fail, S::AdoptFailed),
    t(S::AdoptFailed, E::Adopt, S::Adopting),
    t(S::AdoptFailed, E::Manage, S::Manageable),
    // Rescue.
    t(S::Active, E::Rescue, S::Rescuing),
    t(S::Rescuing, E::Wait, S::RescueWait),
    t(S::RescueWait, E::Resume, S::Rescuing),
    t(S::Rescuing, E::Done, S::Rescue),
    t(S::Rescuing, E::Fail, S::RescueFailed),
    t(S::RescueWait, E::Fail, S::RescueFailed),
    t(S::RescueWait, E::Abort, S::RescueFailed),
    t(S::Rescue, E::Rescue, S::Rescuing),
    t(S::RescueFailed, E::Rescue, S::Rescuing),
    t(S::UnrescueFailed, E::Rescue, S::Rescuing),
    t(S::Rescue, E::Unrescue, S::Unrescuing),
    t(S::RescueFailed, E::Unrescue, S::Unrescuing),
    t(S::UnrescueFailed, E::Unrescue, S::Unrescuing),
    t(S::Unrescuing, E::Done, S::Active),
    t(S::Unrescuing, E::Fail, S::UnrescueFailed),
    // Servicing.
    t(S::Active, E::Service, S::Servicing),
    t(S::Servicing, E::Wait, S::ServiceWait),
    t(S::ServiceWait, E::Resume, S::Servicing),
    t(S::Servicing, E::Done, S::Active),
    t(S::Servicing, E::Fail, S::ServiceFailed),
    t(S::ServiceWait, E::Fail, S::ServiceFailed),
    t(S::Servicing, E::Hold, S::ServiceHold),
    t(S::ServiceWait, E::Hold, S::ServiceHold),
    t(S::ServiceHold, E::Unhold, S::ServiceWait),
    t(S::ServiceHold, E::Service, S::Servicing),
    t(S::ServiceWait, E::Abort, S::ServiceFailed),
    t(S::ServiceHold, E::Abort, S::ServiceFailed),
    t(S::ServiceFailed, E::Abort, S::Active),
    t(S::ServiceFailed, E::Service, S::Servicing),
    t(S::ServiceFailed, E::Rescue, S::Rescuing),
    t(S::ServiceFailed, E::Wait, S::ServiceWait),
    t(S::ServiceFailed, E::Hold, S::ServiceHold),
];

/// The state `event` moves a node in `from` to, or `None` if the event is not valid there.
pub fn next_state(from: ProvisionState, event: Event) -> Option<ProvisionState> {
    TRANSITIONS.iter().find(|row| row.from == from && row.event == event).map(|row| row.to)
}

/// Every state in which `event` is valid, for the `WHERE provision_state IN (…)` of a
/// conditional update.
pub fn source_states(event: Event) -> Vec<ProvisionState> {
    TRANSITIONS.iter().filter(|row| row.event == event).map(|row| row.from).collect()
}

/// The event that successfully finishes the operation running in `state`, given the node's
/// `target_provision_state`: manual cleaning (target `manageable`) finishes with `manage`,
/// everything else with `done`. `None` when `state` has no successful end.
pub fn completion_event(state: ProvisionState, target: Option<ProvisionState>) -> Option<Event> {
    let event = match (state, target) {
        (S::Cleaning, Some(S::Manageable)) => E::Manage,
        _ => E::Done,
    };
    next_state(state, event).map(|_| event)
}

/// The result of applying an event: both state fields as the node stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
}

/// Why an event cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("event {event} is not valid in provision state {from}")]
    InvalidEvent { from: ProvisionState, event: Event },
    #[error("{target} is not a possible target while in provision state {state}")]
    InvalidTarget { state: ProvisionState, target: ProvisionState },
}

/// Applies `event` to a node in `from` whose current target is `current_target`.
///
/// The new target is, in order: cleared when the new state is stable; `requested_target`
/// if given (it must be one of [`ProvisionState::possible_targets`] of the new state);
/// the current target if the new state can have it (so a manual clean keeps `manageable`
/// through `clean wait`, `cleaning` and `clean failed`); else the new state's default.
pub fn advance(
    from: ProvisionState,
    event: Event,
    current_target: Option<ProvisionState>,
    requested_target: Option<ProvisionState>,
) -> Result<StateChange, TransitionError> {
    let to = next_state(from, event).ok_or(TransitionError::InvalidEvent { from, event })?;
    let possible = to.possible_targets();
    let target_provision_state = if to.is_stable() {
        None
    } else if let Some(requested) = requested_target {
        if !possible.contains(&requested) {
            return Err(TransitionError::InvalidTarget { state: to, target: requested });
        }
        Some(requested)
    } else {
        match current_target {
            Some(current) if possible.contains(&current) => Some(current),
            _ => possible.first().copied(),
        }
    };
    Ok(StateChange { provision_state: to, target_provision_state })
}

impl ProvisionState {
    /// Stable states: nothing is in progress and `target_provision_state` is `null`.
    pub fn is_stable(self) -> bool {
        matches!(self, S::Enroll | S::Manageable | S::Available | S::Active | S::Error | S::Rescue)
    }

    /// The stable states a node in this state may be heading for, default first; empty for
    /// stable states. Only cleaning has two: `available` (automated, after `provide` or
    /// tear-down) and `manageable` (manual `clean`).
    pub fn possible_targets(self) -> &'static [ProvisionState] {
        match self {
            S::Enroll | S::Manageable | S::Available | S::Active | S::Error | S::Rescue => &[],
            S::Verifying | S::Inspecting | S::InspectWait | S::InspectFailed => &[S::Manageable],
            S::Cleaning | S::CleanWait | S::CleanFailed | S::CleanHold => {
                &[S::Available, S::Manageable]
            }
            S::Deleting => &[S::Available],
            S::Deploying | S::DeployWait | S::DeployFailed | S::DeployHold => &[S::Active],
            S::Adopting | S::AdoptFailed => &[S::Active],
            S::Rescuing | S::RescueWait | S::RescueFailed => &[S::Rescue],
            S::Unrescuing | S::UnrescueFailed => &[S::Active],
            S::Servicing | S::ServiceWait | S::ServiceFailed | S::ServiceHold => &[S::Active],
        }
    }

    /// States in which the conductor is waiting for the ramdisk agent to heartbeat before
    /// it can make progress.
    pub fn is_agent_wait(self) -> bool {
        matches!(
            self,
            S::DeployWait | S::CleanWait | S::InspectWait | S::RescueWait | S::ServiceWait
        )
    }

    /// Whether `GET /v1/lookup` may return this node (with `[api]restrict_lookup`).
    /// Fast-track nodes keep their agent running between operations, so they may also be
    /// looked up while idle.
    pub fn lookup_allowed(self, fast_track: bool) -> bool {
        let always = matches!(
            self,
            S::Deploying
                | S::DeployWait
                | S::Cleaning
                | S::CleanWait
                | S::Inspecting
                | S::InspectWait
                | S::Rescuing
                | S::RescueWait
                | S::ServiceWait
        );
        always
            || (fast_track
                && matches!(
                    self,
                    S::Enroll | S::Manageable | S::Available | S::Servicing | S::ServiceHold
                ))
    }

    /// Whether the conductor processes (rather than ignores) a heartbeat in this state.
    pub fn heartbeat_allowed(self, fast_track: bool) -> bool {
        let always = matches!(
            self,
            S::DeployWait
                | S::CleanWait
                | S::RescueWait
                | S::ServiceWait
                | S::Deploying
                | S::Cleaning
                | S::Rescuing
                | S::DeployHold
                | S::CleanHold
                | S::Servicing
                | S::ServiceHold
        );
        always || (fast_track && matches!(self, S::Manageable | S::Available | S::Enroll))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The transitions of the facts document, §9.2, written the way the document writes
    /// them: `a|b --e1|e2--> c`.
    const SPEC: &[&str] = &[
        "enroll --manage--> verifying",
        "verifying --done--> manageable",
        "verifying --fail--> enroll",
        "manageable --provide--> cleaning",
        "manageable --clean--> cleaning",
        "manageable --inspect--> inspecting",
        "inspect failed --inspect--> inspecting",
        "inspecting --wait--> inspect wait",
        "inspecting|inspect wait --done--> manageable",
        "inspecting|inspect wait --fail--> inspect failed",
        "inspect wait --abort--> inspect failed",
        "inspect wait --resume--> inspecting",
        "inspect failed --manage--> manageable",
        "cleaning --wait--> clean wait",
        "clean wait --resume--> cleaning",
        "cleaning --done--> available",
        "cleaning --manage--> manageable",
        "cleaning|clean wait --fail--> clean failed",
        "clean wait --abort--> clean failed",
        "cleaning|clean wait --hold--> clean hold",
        "clean hold --unhold--> clean wait",
        "clean hold --abort--> clean failed",
        "clean failed --manage--> manageable",
        "available --manage--> manageable",
        "available --deploy--> deploying",
        "deploying --wait--> wait call-back",
        "wait call-back --resume--> deploying",
        "deploying --done--> active",
        "deploying|wait call-back --fail--> deploy failed",
        "wait call-back --abort--> deploy failed",
        "deploying|wait call-back --hold--> deploy hold",
        "deploy hold --unhold--> wait call-back",
        "deploy hold --abort--> deploy failed",
        "deploy failed --deploy|rebuild--> deploying",
        "active --rebuild--> deploying",
        "error --rebuild--> deploying",
        "active|wait call-back|deploy failed|error|rescue|rescue wait|rescue failed\
         |unrescue failed|service wait|service failed --delete--> deleting",
        "deleting --clean--> cleaning",
        "deleting --fail--> error",
        "manageable --adopt--> adopting",
        "adopting --done--> active",
        "adopting --fail--> adopt failed",
        "adopt failed --adopt--> adopting",
        "adopt failed --manage--> manageable",
        "active --rescue--> rescuing",
        "rescuing --wait--> rescue wait",
        "rescue wait --resume--> rescuing",
        "rescuing --done--> rescue",
        "rescuing|rescue wait --fail--> rescue failed",
        "rescue wait --abort--> rescue failed",
        "rescue|rescue failed|unrescue failed --rescue--> rescuing",
        "rescue|rescue failed|unrescue failed --unrescue--> unrescuing",
        "unrescuing --done--> active",
        "unrescuing --fail--> unrescue failed",
        "active --service--> servicing",
        "servicing --wait--> service wait",
        "service wait --resume--> servicing",
        "servicing --done--> active",
        "servicing|service wait --fail--> service failed",
        "servicing|service wait --hold--> service hold",
        "service hold --unhold--> service wait",
        "service hold --service--> servicing",
        "service wait|service hold --abort--> service failed",
        "service failed --abort--> active",
        "service failed --service--> servicing",
        "service failed --rescue--> rescuing",
        "service failed --wait--> service wait",
        "service failed --hold--> service hold",
    ];

    fn spec_rows() -> Vec<Transition> {
        let mut rows = Vec::new();
        for line in SPEC {
            let (froms, rest) = line.split_once(" --").unwrap();
            let (events, to) = rest.split_once("--> ").unwrap();
            let to: ProvisionState = to.parse().unwrap();
            for from in froms.split('|') {
                for event in events.split('|') {
                    rows.push(t(from.trim().parse().unwrap(), event.parse().unwrap(), to));
                }
            }
        }
        rows
    }

    #[test]
    fn every_spec_transition_is_in_the_table() {
        for row in spec_rows() {
            assert_eq!(next_state(row.from, row.event), Some(row.to), "{row:?}");
        }
    }

    #[test]
    fn table_has_nothing_beyond_the_spec_and_no_duplicate_pairs() {
        let spec: HashSet<Transition> = spec_rows().into_iter().collect();
        let mut pairs = HashSet::new();
        for row in TRANSITIONS {
            assert!(spec.contains(row), "row not in the spec: {row:?}");
            assert!(pairs.insert((row.from, row.event)), "duplicate pair: {row:?}");
        }
        assert_eq!(TRANSITIONS.len(), spec.len());
    }

    #[test]
    fn invalid_pairs_are_refused() {
        let invalid = [
            (S::Active, E::Deploy),
            (S::Available, E::Done),
            (S::Available, E::Clean),
            (S::Available, E::Provide),
            (S::Enroll, E::Provide),
            (S::Enroll, E::Deploy),
            (S::Manageable, E::Deploy),
            (S::CleanWait, E::Deploy),
            (S::CleanWait, E::Done),
            (S::Deploying, E::Delete),
            (S::Deploying, E::Abort),
            (S::Error, E::Deploy),
            (S::Rescue, E::Deploy),
            (S::InspectFailed, E::Abort),
            (S::Verifying, E::Abort),
            (S::Deleting, E::Done),
            (S::DeployHold, E::Resume),
            (S::Active, E::Done),
        ];
        for (from, event) in invalid {
            assert_eq!(next_state(from, event), None, "{from} --{event}-->");
            assert_eq!(
                advance(from, event, None, None),
                Err(TransitionError::InvalidEvent { from, event })
            );
        }
    }

    #[test]
    fn provision_state_strings() {
        let expected = [
            (S::Enroll, "enroll"),
            (S::Verifying, "verifying"),
            (S::Manageable, "manageable"),
            (S::Inspecting, "inspecting"),
            (S::InspectWait, "inspect wait"),
            (S::InspectFailed, "inspect failed"),
            (S::Cleaning, "cleaning"),
            (S::CleanWait, "clean wait"),
            (S::CleanFailed, "clean failed"),
            (S::CleanHold, "clean hold"),
            (S::Available, "available"),
            (S::Deploying, "deploying"),
            (S::DeployWait, "wait call-back"),
            (S::DeployFailed, "deploy failed"),
            (S::DeployHold, "deploy hold"),
            (S::Active, "active"),
            (S::Deleting, "deleting"),
            (S::Error, "error"),
            (S::Adopting, "adopting"),
            (S::AdoptFailed, "adopt failed"),
            (S::Rescuing, "rescuing"),
            (S::RescueWait, "rescue wait"),
            (S::Rescue, "rescue"),
            (S::RescueFailed, "rescue failed"),
            (S::Unrescuing, "unrescuing"),
            (S::UnrescueFailed, "unrescue failed"),
            (S::Servicing, "servicing"),
            (S::ServiceWait, "service wait"),
            (S::ServiceFailed, "service failed"),
            (S::ServiceHold, "service hold"),
        ];
        assert_eq!(expected.len(), ProvisionState::ALL.len());
        for (state, text) in expected {
            let json = format!("\"{text}\"");
            assert_eq!(serde_json::to_string(&state).unwrap(), json);
            assert_eq!(serde_json::from_str::<ProvisionState>(&json).unwrap(), state);
            assert_eq!(text.parse::<ProvisionState>().unwrap(), state);
            assert_eq!(state.to_string(), text);
        }
        assert!(serde_json::from_str::<ProvisionState>("\"deploy wait\"").is_err());
        assert!("Active".parse::<ProvisionState>().is_err());
    }

    #[test]
    fn power_strings_and_null() {
        for (state, text) in [
            (PowerState::On, "power on"),
            (PowerState::Off, "power off"),
            (PowerState::Error, "error"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(text));
        }
        #[derive(Deserialize, Serialize)]
        struct States {
            power_state: Option<PowerState>,
            target_power_state: Option<PowerTarget>,
        }
        let s: States = serde_json::from_str(
            r#"{"power_state": null, "target_power_state": "soft power off"}"#,
        )
        .unwrap();
        assert_eq!(s.power_state, None);
        assert_eq!(s.target_power_state, Some(PowerTarget::SoftPowerOff));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"power_state":null,"target_power_state":"soft power off"}"#
        );
        let targets = [
            (PowerTarget::On, "power on", 1),
            (PowerTarget::Off, "power off", 1),
            (PowerTarget::Rebooting, "rebooting", 1),
            (PowerTarget::SoftRebooting, "soft rebooting", 27),
            (PowerTarget::SoftPowerOff, "soft power off", 27),
        ];
        assert_eq!(targets.len(), PowerTarget::ALL.len());
        for (target, text, minor) in targets {
            assert_eq!(text.parse::<PowerTarget>().unwrap(), target);
            assert_eq!(serde_json::to_value(target).unwrap(), serde_json::json!(text));
            assert_eq!(target.min_version().minor, minor, "{target}");
        }
    }

    #[test]
    fn verbs_versions_and_events() {
        let table = [
            ("active", 1, E::Deploy),
            ("deploy", 73, E::Deploy),
            ("rebuild", 1, E::Rebuild),
            ("deleted", 1, E::Delete),
            ("undeploy", 73, E::Delete),
            ("manage", 4, E::Manage),
            ("provide", 4, E::Provide),
            ("inspect", 6, E::Inspect),
            ("abort", 13, E::Abort),
            ("clean", 15, E::Clean),
            ("adopt", 17, E::Adopt),
            ("rescue", 38, E::Rescue),
            ("unrescue", 38, E::Unrescue),
            ("unhold", 85, E::Unhold),
            ("service", 87, E::Service),
        ];
        assert_eq!(table.len(), ProvisionVerb::ALL.len());
        for (text, minor, event) in table {
            let verb: ProvisionVerb = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(verb.as_str(), text);
            assert_eq!(verb.min_version(), ApiVersion::new(1, minor), "{text}");
            assert!(verb.allowed_at(ApiVersion::new(1, minor)));
            assert!(!verb.allowed_at(ApiVersion::new(1, minor - 1)) || minor == 1);
            assert_eq!(verb_event(verb), event, "{text}");
        }
        assert!("delete".parse::<ProvisionVerb>().is_err());
        let abort = ProvisionVerb::Abort;
        assert_eq!(abort.min_version_in(S::DeployWait), ApiVersion::new(1, 110));
        assert_eq!(abort.min_version_in(S::CleanWait), ApiVersion::new(1, 13));
        assert_eq!(ProvisionVerb::Service.min_version_in(S::Active), ApiVersion::new(1, 87));
    }

    #[test]
    fn every_event_string_round_trips() {
        for event in Event::ALL {
            let json = serde_json::to_string(event).unwrap();
            assert_eq!(json, format!("\"{}\"", event.as_str()));
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), *event);
        }
        assert_eq!(Event::Done.as_str(), "done");
        assert_eq!(Event::Unhold.as_str(), "unhold");
    }

    #[test]
    fn stable_and_wait_states() {
        let stable: Vec<_> = ProvisionState::ALL.iter().filter(|s| s.is_stable()).collect();
        assert_eq!(
            stable,
            [&S::Enroll, &S::Manageable, &S::Available, &S::Active, &S::Error, &S::Rescue]
        );
        let waits: Vec<_> = ProvisionState::ALL.iter().filter(|s| s.is_agent_wait()).collect();
        assert_eq!(
            waits,
            [&S::InspectWait, &S::CleanWait, &S::DeployWait, &S::RescueWait, &S::ServiceWait]
        );
        for state in ProvisionState::ALL {
            assert_eq!(state.is_stable(), state.possible_targets().is_empty(), "{state}");
        }
    }

    #[test]
    fn lookup_states_with_and_without_fast_track() {
        let normal = "deploying, wait call-back, cleaning, clean wait, inspecting, inspect wait, \
                      rescuing, rescue wait, service wait";
        let fast_extra = "enroll, manageable, available, servicing, service hold";
        let parse = |list: &str| -> HashSet<ProvisionState> {
            list.split(", ").map(|s| s.parse().unwrap()).collect()
        };
        let normal = parse(normal);
        let fast: HashSet<_> = normal.union(&parse(fast_extra)).copied().collect();
        for state in ProvisionState::ALL {
            assert_eq!(state.lookup_allowed(false), normal.contains(state), "{state}");
            assert_eq!(state.lookup_allowed(true), fast.contains(state), "{state} fast-track");
        }
    }

    #[test]
    fn heartbeat_states_with_and_without_fast_track() {
        let normal: HashSet<ProvisionState> = "wait call-back, clean wait, rescue wait, \
            service wait, deploying, cleaning, rescuing, deploy hold, clean hold, servicing, \
            service hold"
            .split(", ")
            .map(|s| s.parse().unwrap())
            .collect();
        for state in ProvisionState::ALL {
            let fast =
                normal.contains(state) || matches!(state, S::Manageable | S::Available | S::Enroll);
            assert_eq!(state.heartbeat_allowed(false), normal.contains(state), "{state}");
            assert_eq!(state.heartbeat_allowed(true), fast, "{state} fast-track");
        }
    }

    #[test]
    fn manual_cleaning_keeps_its_target_and_ends_in_manageable() {
        let target = Some(S::Manageable);
        let c = advance(S::Manageable, E::Clean, None, target).unwrap();
        assert_eq!(c, StateChange { provision_state: S::Cleaning, target_provision_state: target });
        let c = advance(c.provision_state, E::Wait, c.target_provision_state, None).unwrap();
        assert_eq!(
            c,
            StateChange { provision_state: S::CleanWait, target_provision_state: target }
        );
        let c = advance(c.provision_state, E::Resume, c.target_provision_state, None).unwrap();
        assert_eq!(c.target_provision_state, target);
        let done = completion_event(c.provision_state, c.target_provision_state).unwrap();
        assert_eq!(done, E::Manage);
        let c = advance(c.provision_state, done, c.target_provision_state, None).unwrap();
        assert_eq!(c, StateChange { provision_state: S::Manageable, target_provision_state: None });
    }

    #[test]
    fn automated_cleaning_after_provide_and_teardown_ends_in_available() {
        let c = advance(S::Manageable, E::Provide, None, None).unwrap();
        assert_eq!(c.target_provision_state, Some(S::Available));
        assert_eq!(completion_event(S::Cleaning, c.target_provision_state), Some(E::Done));

        let c = advance(S::Active, E::Delete, None, None).unwrap();
        assert_eq!(
            c,
            StateChange {
                provision_state: S::Deleting,
                target_provision_state: Some(S::Available)
            }
        );
        let c = advance(c.provision_state, E::Clean, c.target_provision_state, None).unwrap();
        assert_eq!(c.target_provision_state, Some(S::Available));
        let c = advance(c.provision_state, E::Fail, c.target_provision_state, None).unwrap();
        assert_eq!(
            c,
            StateChange {
                provision_state: S::CleanFailed,
                target_provision_state: Some(S::Available)
            }
        );
    }

    #[test]
    fn targets_follow_the_operation() {
        let c = advance(S::Available, E::Deploy, None, None).unwrap();
        assert_eq!(c.target_provision_state, Some(S::Active));
        let c = advance(S::Active, E::Rescue, None, None).unwrap();
        assert_eq!(c.target_provision_state, Some(S::Rescue));
        // Moving to another operation replaces a target that no longer fits.
        let c = advance(S::ServiceFailed, E::Rescue, Some(S::Active), None).unwrap();
        assert_eq!(c.target_provision_state, Some(S::Rescue));
        assert_eq!(
            advance(S::Available, E::Deploy, None, Some(S::Manageable)),
            Err(TransitionError::InvalidTarget { state: S::Deploying, target: S::Manageable })
        );
        assert_eq!(completion_event(S::Deploying, Some(S::Active)), Some(E::Done));
        assert_eq!(completion_event(S::DeployWait, Some(S::Active)), None);
        assert_eq!(completion_event(S::Active, None), None);
    }

    #[test]
    fn source_states_list_every_origin() {
        let mut rebuild = source_states(E::Rebuild);
        rebuild.sort();
        assert_eq!(rebuild, [S::DeployFailed, S::Active, S::Error]);
        assert_eq!(source_states(E::Delete).len(), 10);
    }
}
