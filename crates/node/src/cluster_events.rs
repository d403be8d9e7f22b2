//! The cluster changes an operator acts on, each said once when it happens (issue 21): the leader
//! changing, a member, a whole zone or a whole region going down and coming back. Dependencies log
//! at WARN by default, so openraft's own leader lines are gone; these replace them in words an
//! operator uses. Pure: [`Changes::observe`] takes the leader and the health view and returns the
//! events; `cluster_health.rs` calls it each heartbeat round and logs them.
//!
//! Only what was seen up can go down: at start every member is unheard of until its first answer,
//! and a node must not announce its whole cluster down and back up as it boots.

use std::collections::{BTreeMap, BTreeSet};

use hatrunk_core::ha::HealthView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The leader is now this member (`None`: no leader known).
    Leader(Option<String>),
    MemberDown(String),
    MemberUp(String),
    ZoneDown(String),
    ZoneUp(String),
    RegionDown(String),
    RegionUp(String),
}

#[derive(Debug, Default)]
pub struct Changes {
    leader: Option<Option<u64>>,
    /// Members seen answering at least once.
    seen: BTreeSet<u64>,
    down: BTreeSet<u64>,
    zones_down: BTreeSet<String>,
    regions_down: BTreeSet<String>,
}

impl Changes {
    pub fn observe(&mut self, leader: Option<u64>, view: &HealthView) -> Vec<Event> {
        let mut out = Vec::new();
        let name = |id: u64| view.get(id).map(|m| m.member.name.clone()).unwrap_or_else(|| format!("node {id}"));
        if self.leader != Some(leader) {
            // the first leader known is worth a line too; "none" only once one was known
            if leader.is_some() || self.leader.is_some_and(|l| l.is_some()) {
                out.push(Event::Leader(leader.map(name)));
            }
            self.leader = Some(leader);
        }
        let me = view.self_id;
        for m in view.members.iter().filter(|m| m.member.id != me && m.member.sip) {
            let id = m.member.id;
            if m.alive {
                self.seen.insert(id);
                if self.down.remove(&id) {
                    out.push(Event::MemberUp(m.member.name.clone()));
                }
            } else if self.seen.contains(&id) && self.down.insert(id) {
                out.push(Event::MemberDown(m.member.name.clone()));
            }
        }
        self.down.retain(|id| view.get(*id).is_some());
        let (zones, regions) = self.places(view);
        diff(&mut self.zones_down, zones, Event::ZoneDown, Event::ZoneUp, &mut out);
        diff(&mut self.regions_down, regions, Event::RegionDown, Event::RegionUp, &mut out);
        out
    }

    /// Zones and regions whose every SIP member was seen and is down now (this node's own never).
    fn places(&self, view: &HealthView) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut zones: BTreeMap<&str, bool> = BTreeMap::new();
        let mut regions: BTreeMap<&str, bool> = BTreeMap::new();
        for m in view.members.iter().filter(|m| m.member.sip) {
            let id = m.member.id;
            let down = id != view.self_id && self.seen.contains(&id) && self.down.contains(&id);
            *zones.entry(&m.member.zone).or_insert(true) &= down;
            *regions.entry(&m.member.region).or_insert(true) &= down;
        }
        let all_down = |m: BTreeMap<&str, bool>| m.into_iter().filter(|(_, d)| *d).map(|(p, _)| p.to_string()).collect();
        (all_down(zones), all_down(regions))
    }
}

fn diff(was: &mut BTreeSet<String>, now: BTreeSet<String>, down: fn(String) -> Event, up: fn(String) -> Event, out: &mut Vec<Event>) {
    out.extend(now.difference(was).cloned().map(down));
    out.extend(was.difference(&now).cloned().map(up));
    *was = now;
}

#[cfg(test)]
mod tests {
    use hatrunk_core::ha::{Member, MemberHealth};

    use super::*;

    fn view(alive: &[bool]) -> HealthView {
        // node 1 (this one) in sg1-a; 2 in sg1-a; 3, 4 in sg1-b; 5 in hk1-a (another region)
        let place = [("sg1", "sg1-a"), ("sg1", "sg1-a"), ("sg1", "sg1-b"), ("sg1", "sg1-b"), ("hk1", "hk1-a")];
        let members = place
            .iter()
            .zip(alive)
            .enumerate()
            .map(|(i, ((region, zone), alive))| {
                let id = i as u64 + 1;
                let member = Member {
                    id,
                    name: format!("n{id}"),
                    region: region.to_string(),
                    zone: zone.to_string(),
                    sip: true,
                    voter: true,
                    sip_addr: format!("10.0.0.{id}:5060"),
                };
                MemberHealth { member, alive: *alive, quorum: true }
            })
            .collect();
        HealthView { self_id: 1, quorum: true, members }
    }

    #[test]
    fn a_starting_node_announces_the_leader_and_not_its_unheard_members() {
        let mut c = Changes::default();
        assert_eq!(c.observe(None, &view(&[true, false, false, false, false])), vec![]);
        assert_eq!(c.observe(Some(3), &view(&[true, true, true, true, true])), vec![Event::Leader(Some("n3".into()))]);
    }

    #[test]
    fn members_zones_and_regions_go_down_and_up_once_each() {
        let mut c = Changes::default();
        c.observe(Some(1), &view(&[true; 5]));
        let down = c.observe(Some(1), &view(&[true, true, false, false, false]));
        assert_eq!(
            down,
            vec![
                Event::MemberDown("n3".into()),
                Event::MemberDown("n4".into()),
                Event::MemberDown("n5".into()),
                Event::ZoneDown("hk1-a".into()),
                Event::ZoneDown("sg1-b".into()),
                Event::RegionDown("hk1".into()),
            ]
        );
        assert_eq!(c.observe(Some(1), &view(&[true, true, false, false, false])), vec![], "said once");
        let up = c.observe(Some(1), &view(&[true, true, true, false, true]));
        assert_eq!(
            up,
            vec![
                Event::MemberUp("n3".into()),
                Event::MemberUp("n5".into()),
                Event::ZoneUp("hk1-a".into()),
                Event::ZoneUp("sg1-b".into()),
                Event::RegionUp("hk1".into())
            ]
        );
        // this node's own zone and region are never down from where it stands
        let alone = c.observe(Some(1), &view(&[true, false, false, false, false]));
        assert!(!alone.contains(&Event::ZoneDown("sg1-a".into())) && !alone.contains(&Event::RegionDown("sg1".into())), "{alone:?}");
        assert_eq!(c.observe(None, &view(&[true; 5]))[0], Event::Leader(None));
    }
}
