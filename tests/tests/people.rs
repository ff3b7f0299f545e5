//! People across connections (issue 17): the person index, in process — two providers of one
//! employer, the hard cases of reconciling people, keys that change, a disconnect — measured
//! against the emulator's ground truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use perch::domain::{ConnectionId, CustomerId, EntityId};
use perch::flows::people::view;
use perch::flows::sync::Trigger;
use perch_tests::fast::Fast;
use perch_tests::syncing::*;
use serde_json::{Value, json};

const WITH_SSN: &[&str] = &["company", "directory", "individual", "employment", "ssn"];
const PAY: &[&str] = &["company", "directory", "individual", "employment", "payment", "pay_statement"];

/// A connection of `acme` through `provider` as `username` (each username reaches its own
/// company of the same employer: the same people, other ids), synced to the end.
async fn connect_and_sync(f: &Fast, products: &[&str], provider: &str, username: &str) -> (ConnectionId, EntityId) {
    let s = f.session("acme", json!({"products": products, "additional": true})).await.expect("session");
    let (code, state) = f.login_as(&s.connect_url, provider, username, None).await;
    let out = f.redirect_callback(&code, Some(&state)).await.expect("callback");
    let id = out.connection.connection_id.clone();
    let rec = f.mem.store.connections().into_iter().find(|r| r.connection_id == id).expect("stored");
    sync_through(f, &settings(&[]), &id, Trigger::Connected).await;
    (id, rec.entities[0].id.clone())
}

/// Every person of `customer`, as the app pages through them.
async fn everyone(f: &Fast, customer: &CustomerId) -> Vec<view::PersonSummary> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = view::people(&f.app, customer, cursor.as_deref(), 7).await.expect("people");
        out.extend(page.people);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// The emulator's truth: who each individual of each entity is.
fn truth(f: &Fast, entities: &[&EntityId]) -> HashMap<String, String> {
    let mut w = f.finch.shared.world();
    let mut out = HashMap::new();
    for e in entities {
        let r = w.roster(e.as_str());
        for n in r.numbers() {
            out.insert(r.person(n).unwrap().id, r.truth(n).unwrap());
        }
    }
    out
}

/// Precision (every person is one human) and the humans split across several persons.
fn score(people: &[view::PersonSummary], truth: &HashMap<String, String>) -> (usize, usize) {
    let mut wrong = 0;
    let mut persons_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in people {
        let humans: BTreeSet<&str> = p.sources.iter().map(|l| truth[&l.source.individual_id].as_str()).collect();
        wrong += usize::from(humans.len() > 1);
        for h in humans {
            persons_of.entry(h).or_default().insert(p.person_id.as_str());
        }
    }
    (wrong, persons_of.values().filter(|ps| ps.len() > 1).count())
}

#[tokio::test]
async fn the_same_employees_at_two_providers_are_one_person_each_and_never_two_in_one() {
    let f = start(&[]).await;
    let (a, ea) = connect_and_sync(&f, WITH_SSN, "gusto", "good_user").await;
    let (b, eb) = connect_and_sync(&f, WITH_SSN, "adp_run", "good_user_adp").await;
    assert_ne!(a, b);
    let people = everyone(&f, &acme()).await;
    let truth = truth(&f, &[&ea, &eb]);
    let (wrong, split) = score(&people, &truth);
    assert_eq!((wrong, split), (0, 0), "every employee is one person, every person one employee");
    assert_eq!(people.len(), 20, "twenty people, two sources each");
    assert!(people.iter().all(|p| p.sources.len() == 2 && p.first_name.is_some() && p.last_name.is_some()));
    // With the SSN granted, the SSN links them: the strongest key, whatever else differs.
    let rules: BTreeSet<_> = people.iter().flat_map(|p| p.sources.iter().filter_map(|l| l.rule)).collect();
    assert_eq!(rules, BTreeSet::from([perch::domain::people::MatchRule::Ssn]));

    // Keyed hashes only: no SSN, name or birthday of anyone is in the index.
    let index = f.mem.store.index_dump(&acme());
    assert!(index.contains("work_email_domain") && index.contains("personal_email"), "the dump has every key");
    let mut w = f.finch.shared.world();
    let r = w.roster(ea.as_str()).clone();
    for n in r.numbers() {
        let p = r.person(n).unwrap();
        let domain = p.work_email.split_once('@').unwrap().1.to_owned();
        for v in [
            &p.ssn,
            &p.ssn.replace('-', ""),
            &p.dob,
            &p.last_name.to_lowercase(),
            &p.work_email,
            &p.personal_email,
            &domain,
        ] {
            assert!(!index.contains(v.as_str()), "plaintext of person {n} in the index");
        }
    }
    drop(w);
    assert_no_pii_logged(&f, &ea);
}

#[tokio::test]
async fn without_the_ssn_names_birthdays_and_emails_link_people_and_namesakes_stay_apart_unless_told_apart() {
    let f = start(&[]).await;
    // Forty people: persons 6 and 7 of the population are namesakes (same name and birthday),
    // and each provider shows some people renamed, without a birthday, or at another domain.
    f.finch.shared.world().default_employees = Some(40);
    let (_, ea) = connect_and_sync(&f, ORG, "gusto", "good_user").await;
    let (_, eb) = connect_and_sync(&f, ORG, "adp_run", "good_user_adp").await;
    let people = everyone(&f, &acme()).await;
    let truth = truth(&f, &[&ea, &eb]);
    let (wrong, split) = score(&people, &truth);
    assert_eq!(wrong, 0, "precision first: no person is two humans");
    // A human stays split only when their two records share no key that names them alone: an
    // e-mail, or a name and birthday no namesake shares.
    let rosters = {
        let mut w = f.finch.shared.world();
        (w.roster(ea.as_str()).clone(), w.roster(eb.as_str()).clone())
    };
    let nd = |p: &finch_emulator::people::Person| {
        (!p.dob_withheld).then(|| (p.first_name.to_lowercase(), p.last_name.to_lowercase(), p.dob.clone()))
    };
    let holders = |r: &finch_emulator::people::Roster, key: &Option<(String, String, String)>| {
        r.numbers().filter(|n| key.is_some() && nd(&r.person(*n).unwrap()) == *key).count()
    };
    let unresolvable = (0..40)
        .filter(|n| {
            let (x, y) = (rosters.0.person(*n).unwrap(), rosters.1.person(*n).unwrap());
            let by_name = nd(&x).is_some()
                && nd(&x) == nd(&y)
                && holders(&rosters.0, &nd(&x)) == 1
                && holders(&rosters.1, &nd(&y)) == 1;
            !by_name && x.work_email != y.work_email
        })
        .count();
    assert_eq!(split, unresolvable, "every human with a key that names them alone is one person");
    // The namesakes: their names and birthdays are one key for two people; their e-mails tell
    // them apart, and the link says so.
    let namesake = rosters.1.person(7).unwrap().id;
    let linked = people.iter().find(|p| p.sources.iter().any(|l| l.source.individual_id == namesake)).unwrap();
    if linked.sources.len() == 2 {
        let rule = linked.sources.iter().find_map(|l| l.rule).unwrap();
        assert_ne!(rule, perch::domain::people::MatchRule::NameAndDob, "never by a key two people share");
    }
}

#[tokio::test]
async fn three_providers_of_a_larger_workforce_never_merge_two_people() {
    let f = start(&[]).await;
    f.finch.shared.world().default_employees = Some(300);
    // A population of its own each run: other names, other namesakes, other flaws.
    let name = format!("Pop{:08x}", rand_u32());
    let mut entities = Vec::new();
    for (provider, user) in [("gusto", "good_user"), ("adp_run", "good_user_adp"), ("bamboo_hr", "good_user_bamboo")] {
        let (id, e) = connect_and_sync(&f, ORG, provider, user).await;
        // The same 300 people at every provider, drawn anew from this run's population.
        let body = json!({"size": 300, "entity_id": e, "population": {"name": name}});
        let r = reqwest::Client::new()
            .post(format!("{}/_emulator/connections/{id}/employees", f.finch.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        sync_through(&f, &settings(&[]), &id, Trigger::Requested).await;
        entities.push(e);
    }
    let people = everyone(&f, &acme()).await;
    let refs: Vec<&EntityId> = entities.iter().collect();
    let t = truth(&f, &refs);
    let (wrong, split) = score(&people, &t);
    if wrong > 0 {
        let mut w = f.finch.shared.world();
        let mut find = HashMap::new();
        for e in &entities {
            let r = w.roster(e.as_str()).clone();
            for n in r.numbers() {
                let p = r.person(n).unwrap();
                find.insert(p.id.clone(), (e.clone(), n, p));
            }
        }
        for p in &people {
            let humans: BTreeSet<&str> = p.sources.iter().map(|l| t[&l.source.individual_id].as_str()).collect();
            if humans.len() > 1 {
                for l in &p.sources {
                    let (e, n, x) = &find[&l.source.individual_id];
                    eprintln!(
                        "{:?} {e} n={n} truth={} {} {} dob={} withheld={} {} ssn={}",
                        l.rule,
                        t[&l.source.individual_id],
                        x.first_name,
                        x.last_name,
                        x.dob,
                        x.dob_withheld,
                        x.work_email,
                        x.ssn
                    );
                }
            }
        }
    }
    assert_eq!(wrong, 0, "precision: no person is two humans");
    assert!(split <= 30, "{split} of 300 humans split (no key they share names them alone)");
    assert!(people.len() < 400, "{} persons for 300 humans at three providers", people.len());
}

fn rand_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

#[tokio::test]
async fn two_people_who_share_every_key_but_the_ssn_are_never_merged_and_are_reported() {
    let f = start(&[]).await;
    // At both providers, person 3 has person 4's name, birthday and work e-mail.
    let twin = |f: &Fast, entity: &EntityId| {
        let mut w = f.finch.shared.world();
        let r = w.roster(entity.as_str());
        let four = r.individual(4, true).unwrap();
        let mut patch = finch_emulator::people::Patch::default();
        for k in ["first_name", "last_name", "dob", "emails"] {
            patch.individual.insert(k.into(), four[k].clone());
        }
        r.change(3, patch);
        w.touch(entity.as_str());
    };
    let (a, ea) = connect_and_sync(&f, ORG, "gusto", "good_user").await;
    let s = f.session("acme", json!({"products": ORG, "additional": true})).await.unwrap();
    let (code, state) = f.login_as(&s.connect_url, "adp_run", "good_user_adp", None).await;
    let b = f.redirect_callback(&code, Some(&state)).await.unwrap().connection.connection_id.clone();
    let eb = f.mem.store.connections().into_iter().find(|r| r.connection_id == b).unwrap().entities[0].id.clone();
    twin(&f, &ea);
    twin(&f, &eb);
    sync_through(&f, &settings(&[]), &a, Trigger::Requested).await;
    sync_through(&f, &settings(&[]), &b, Trigger::Connected).await;
    let people = everyone(&f, &acme()).await;
    let (wrong, _) = score(&people, &truth(&f, &[&ea, &eb]));
    assert_eq!(wrong, 0, "no wrong merge");
    let ids: Vec<String> = {
        let mut w = f.finch.shared.world();
        let r = w.roster(eb.as_str());
        vec![r.person(3).unwrap().id, r.person(4).unwrap().id]
    };
    for id in &ids {
        let p = people.iter().find(|p| p.sources.iter().any(|l| l.source.individual_id == *id)).unwrap();
        assert_eq!(p.sources.len(), 1, "left apart");
        assert!(!p.ambiguities.is_empty(), "and reported: {:?}", p.ambiguities);
        assert_eq!(p.ambiguities[0].candidates.len(), 2);
    }
}

#[tokio::test]
async fn a_name_and_birthday_two_people_share_across_companies_never_links_them_when_their_emails_differ() {
    let f = start(&[]).await;
    let connect = |provider: &'static str, username: &'static str| {
        let f = &f;
        async move {
            let s = f.session("acme", json!({"products": ORG, "additional": true})).await.unwrap();
            let (code, state) = f.login_as(&s.connect_url, provider, username, None).await;
            let id = f.redirect_callback(&code, Some(&state)).await.unwrap().connection.connection_id.clone();
            let rec = f.mem.store.connections().into_iter().find(|r| r.connection_id == id).unwrap();
            (id, rec.entities[0].id.clone())
        }
    };
    let (a, ea) = connect("gusto", "good_user").await;
    let (b, eb) = connect("adp_run", "good_user_adp").await;
    // Person 4 of the first company and person 3 of the second (where person 4 does not work)
    // share a name and a birthday; each has an address of their own at the group's domain. The
    // namesake guard sees one entity, so only the addresses tell these two apart.
    let (x, y) = {
        let mut w = f.finch.shared.world();
        let lookalike = json!({"first_name": "Alexis", "last_name": "Lookalike", "dob": "1981-04-05"});
        let mut patch =
            finch_emulator::people::Patch { individual: lookalike.as_object().unwrap().clone(), ..Default::default() };
        let r = w.roster(ea.as_str());
        r.change(4, patch.clone());
        let four = r.individual(4, false).unwrap();
        let domain = four["emails"][0]["data"].as_str().unwrap().split_once('@').unwrap().1.to_owned();
        let x = r.person(4).unwrap().id;
        let r = w.roster(eb.as_str());
        patch.individual.insert("emails".into(), json!([{"data": format!("lookalike@{domain}"), "type": "work"}]));
        r.change(3, patch);
        r.removed.insert(4);
        (x, r.person(3).unwrap().id)
    };
    sync_through(&f, &settings(&[]), &a, Trigger::Connected).await;
    sync_through(&f, &settings(&[]), &b, Trigger::Connected).await;
    let people = everyone(&f, &acme()).await;
    let (wrong, _) = score(&people, &truth(&f, &[&ea, &eb]));
    assert_eq!(wrong, 0, "no wrong merge");
    let of = |id: &str| people.iter().find(|p| p.sources.iter().any(|l| l.source.individual_id == id)).unwrap();
    let (px, py) = (of(&x), of(&y));
    assert_eq!((px.sources.len(), py.sources.len()), (1, 1), "left apart");
    assert_eq!(py.ambiguities.len(), 1, "and the look-alike reported");
    assert_eq!(py.ambiguities[0].rule, perch::domain::people::MatchRule::NameAndDob);
    assert_eq!(py.ambiguities[0].candidates, vec![px.person_id.clone()]);
    // Everyone else at both companies is still one person: the check costs no true link here.
    assert!(people.iter().filter(|p| p.sources.len() == 2).count() >= 8, "{}", people.len());
}

#[tokio::test]
async fn keys_that_change_keep_a_link_and_an_ssn_that_stops_matching_splits_it() {
    let f = start(&[]).await;
    let (a, ea) = connect_and_sync(&f, WITH_SSN, "gusto", "good_user").await;
    let (_, eb) = connect_and_sync(&f, WITH_SSN, "adp_run", "good_user_adp").await;
    let before = everyone(&f, &acme()).await.len();
    let who = |f: &Fast, n: u32| f.finch.shared.world().roster(ea.as_str()).person(n).unwrap().id;
    let change = |f: &Fast, n: u32, fields: Value| {
        let mut w = f.finch.shared.world();
        let r = w.roster(ea.as_str());
        let patch =
            finch_emulator::people::Patch { individual: fields.as_object().unwrap().clone(), ..Default::default() };
        r.change(n, patch);
        w.touch(ea.as_str());
    };
    // A name change and a corrected birthday at one provider: still one person each.
    change(&f, 5, json!({"last_name": "Newname-Married"}));
    change(&f, 6, json!({"dob": "1970-01-01"}));
    sync_through(&f, &settings(&[]), &a, Trigger::Requested).await;
    let people = everyone(&f, &acme()).await;
    assert_eq!(people.len(), before);
    for n in [5, 6] {
        let id = who(&f, n);
        let p = people.iter().find(|p| p.sources.iter().any(|l| l.source.individual_id == id)).unwrap();
        assert_eq!(p.sources.len(), 2, "person {n} keeps both sources");
    }
    // An SSN corrected to another person's number: that source is split off, never merged.
    change(&f, 8, json!({"ssn": "999-99-0001"}));
    sync_through(&f, &settings(&[]), &a, Trigger::Requested).await;
    let people = everyone(&f, &acme()).await;
    assert_eq!(people.len(), before + 1);
    let id = who(&f, 8);
    let p = people.iter().find(|p| p.sources.iter().any(|l| l.source.individual_id == id)).unwrap();
    assert_eq!(p.sources.len(), 1);
    let (wrong, _) = score(&people, &truth(&f, &[&ea, &eb]));
    assert_eq!(wrong, 0);
}

#[tokio::test]
async fn a_person_shows_their_pay_from_every_connection_and_only_to_their_customer() {
    let f = start(&[]).await;
    let (a, _) = connect_and_sync(&f, PAY, "gusto", "good_user").await;
    let (b, _) = connect_and_sync(&f, PAY, "adp_run", "good_user_adp").await;
    let people = everyone(&f, &acme()).await;
    let linked = people.iter().find(|p| p.sources.len() == 2).expect("someone at both providers");
    let v = view::person(&f.app, &acme(), linked.person_id.as_str()).await.expect("person");
    assert_eq!(v.sources.len(), 2);
    assert!(v.sources.iter().all(|s| s.individual.is_some() && s.employment.is_some() && s.directory.is_some()));
    let from: BTreeSet<&ConnectionId> = v.pay.iter().map(|l| &l.connection_id).collect();
    assert_eq!(from, BTreeSet::from([&a, &b]), "pay from both connections");
    assert!(v.pay.windows(2).all(|w| w[0].pay_date >= w[1].pay_date), "newest first");
    assert_eq!(v.pay_totals.len(), 1);
    assert_eq!(v.pay_totals[0].currency, "usd");
    assert_eq!(v.pay_totals[0].statements as usize, v.pay.len());
    let body = serde_json::to_value(&v).unwrap();
    assert!(body["pay"][0]["statement"]["gross_pay"]["amount"].is_i64(), "{}", body["pay"][0]);

    // Another customer sees none of it: an unknown person, and no people.
    let globex = Fast::customer("globex");
    let e = view::person(&f.app, &globex, linked.person_id.as_str()).await.unwrap_err();
    assert!(matches!(e, perch::Error::NotFound("person")), "{e:?}");
    assert!(view::people(&f.app, &globex, None, 50).await.unwrap().people.is_empty());
    assert!(matches!(view::person(&f.app, &acme(), "not a person id!").await, Err(perch::Error::NotFound(_))));
    assert!(view::people(&f.app, &acme(), Some("garbage"), 50).await.is_err());
}

#[tokio::test]
async fn a_disconnect_takes_its_sources_and_their_keys_out_of_the_index() {
    let f = start(&[]).await;
    let (_, ea) = connect_and_sync(&f, WITH_SSN, "gusto", "good_user").await;
    let (b, _) = connect_and_sync(&f, WITH_SSN, "adp_run", "good_user_adp").await;
    let items = f.mem.store.index_items(&acme());
    perch::flows::lifecycle::disconnect(&f.app, &acme(), b.as_str()).await.expect("disconnect");
    // The purge the disconnect queued.
    let work = perch::flows::sync::SyncWork::new(b.clone(), Trigger::Purge);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    perch::flows::sync::run(&f.app, &settings(&[]), &work, deadline).await.expect("purge");
    let people = everyone(&f, &acme()).await;
    assert_eq!(people.len(), 20);
    assert!(people.iter().all(|p| p.sources.len() == 1 && p.sources[0].source.entity_id == ea));
    assert!(f.mem.store.index_items(&acme()) < items, "B's sources and cursor are gone");
    assert_eq!(f.mem.store.data_items(&b), 0);
}

#[tokio::test]
async fn forgetting_a_person_removes_them_everywhere_and_no_sync_brings_them_back() {
    let f = start(&[]).await;
    let (a, ea) = connect_and_sync(&f, PAY, "gusto", "good_user").await;
    let (b, _) = connect_and_sync(&f, PAY, "adp_run", "good_user_adp").await;
    let people = everyone(&f, &acme()).await;
    let p = people.iter().find(|p| p.sources.len() == 2).expect("someone at both providers");
    let sources: Vec<_> = p.sources.iter().map(|l| l.source.clone()).collect();

    let report = perch::flows::people::forget::forget_person(&f.app, &acme(), p.person_id.as_str()).await.unwrap();
    assert!(report.complete);
    let body = serde_json::to_value(&report).unwrap();
    for s in body["sources"].as_array().unwrap() {
        assert_eq!(s["outcome"], "removed", "{s}");
        for kind in ["directory", "individual", "employment"] {
            assert_eq!(s["removed"][kind], 1, "{s}");
        }
        assert!(s["removed"]["pay_statement"].as_u64().unwrap() > 10, "their pay too: {s}");
    }
    assert_eq!(report.index.unwrap().persons, 1);

    // Nothing of them is left: records, statements, the index.
    let gone_from = |f: &Fast, id: &ConnectionId, s: &perch::domain::people::SourceRef| {
        for kind in [perch::domain::sync::RecordKind::Directory, perch::domain::sync::RecordKind::Individual] {
            assert!(f.mem.store.stored_record(id, kind, &s.entity_id, &s.individual_id).is_none());
        }
    };
    for s in &sources {
        gone_from(&f, &s.connection_id, s);
    }
    for c in [&a, &b] {
        let mut cursor: Option<String> = None;
        let mut last: HashMap<String, perch::domain::sync::ChangeOp> = HashMap::new();
        loop {
            let page = feed(&f, c, cursor.as_deref()).await;
            for ch in &page.changes {
                last.insert(format!("{:?}/{}", ch.kind, ch.id), ch.op);
            }
            if !page.has_more {
                break;
            }
            cursor = Some(page.next_cursor);
        }
        let theirs: Vec<_> =
            last.iter().filter(|(k, _)| sources.iter().any(|s| k.contains(&s.individual_id))).collect();
        assert!(!theirs.is_empty());
        assert!(theirs.iter().all(|(_, op)| **op == perch::domain::sync::ChangeOp::Removed), "the feed says so");
    }
    assert!(matches!(view::person(&f.app, &acme(), p.person_id.as_str()).await, Err(perch::Error::NotFound(_))));
    assert_eq!(everyone(&f, &acme()).await.len(), people.len() - 1);

    // The employer still has them: the next syncs do not bring them back.
    sync_through(&f, &settings(&[]), &a, Trigger::Requested).await;
    sync_through(&f, &settings(&[]), &b, Trigger::Requested).await;
    for s in &sources {
        gone_from(&f, &s.connection_id, s);
    }
    assert_eq!(everyone(&f, &acme()).await.len(), people.len() - 1);
    let again = perch::flows::people::forget::forget_person(&f.app, &acme(), p.person_id.as_str()).await;
    assert!(matches!(again, Err(perch::Error::NotFound(_))), "nobody left to forget");
    assert_no_pii_logged(&f, &ea);
}

#[tokio::test]
async fn a_connections_employees_are_searched_by_name_and_each_names_their_person() {
    let f = start(&[]).await;
    let (a, ea) = connect_and_sync(&f, ORG, "gusto", "good_user").await;
    let someone = f.finch.shared.world().roster(ea.as_str()).person(3).unwrap();
    let search = |q: String, cursor: Option<String>, limit| {
        let (f, a) = (&f, &a);
        async move {
            perch::flows::sync::view::employees(&f.app, &acme(), a.as_str(), cursor.as_deref(), limit, Some(&q))
                .await
                .unwrap()
        }
    };
    let found = search(format!("  {} ", someone.last_name.to_uppercase()), None, 100).await;
    assert!(found.employees.iter().any(|e| e.individual_id == someone.id), "found by last name, any case");
    for e in &found.employees {
        let d: Value = serde_json::from_str(e.directory.get()).unwrap();
        let name = format!("{} {}", d["first_name"], d["last_name"]).to_lowercase();
        assert!(name.contains(&someone.last_name.to_lowercase()), "{name}");
        assert!(e.person_id.is_some(), "each employee names their person");
    }
    let v = view::person(&f.app, &acme(), found.employees[0].person_id.as_ref().unwrap().as_str()).await.unwrap();
    assert!(v.sources.iter().any(|s| s.link.source.individual_id == found.employees[0].individual_id));
    // A search pages like the list: one at a time, every match once.
    let all = search("a".into(), None, 100).await.employees.len();
    let (mut seen, mut cursor) = (BTreeSet::new(), None);
    loop {
        let page = search("a".into(), cursor, 1).await;
        seen.extend(page.employees.iter().map(|e| e.individual_id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), all);
    let long = "x".repeat(101);
    let e = perch::flows::sync::view::employees(&f.app, &acme(), a.as_str(), None, 10, Some(&long)).await.unwrap_err();
    assert!(matches!(e, perch::Error::Invalid { .. }), "{e:?}");
}
