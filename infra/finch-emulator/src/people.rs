//! Synthetic workforces: the employees of each emulated entity, deterministic and generated on
//! read.
//!
//! An entity's roster is `size` people numbered from 0, each a pure function of the entity's
//! seed and the number (a SplitMix64 stream), so a 20,000-person company costs a few bytes
//! until something about it changes, and the same login sees the same people on every run.
//! What the control API and Finch's sandbox endpoints change (a hire, a change, a termination,
//! a removal) is kept as a patch on top. Person 0 leads the company; everyone else reports to someone with a lower
//! number, so managers form a tree. About one person in twelve has left (terminated, with an
//! end date). Names, dates of birth, e-mail addresses, SSNs (the 9xx area, which the SSA never
//! issues), salaries and addresses are realistic in shape and fictitious.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const FIRST: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Karen",
    "Daniel",
    "Lisa",
    "Matthew",
    "Nancy",
    "Anthony",
    "Sandra",
    "Mark",
    "Ashley",
    "Steven",
    "Kimberly",
    "Andrew",
    "Emily",
    "Wei",
    "Donna",
    "Joshua",
    "Michelle",
    "Kenneth",
    "Carol",
    "Kevin",
    "Amanda",
    "Brian",
    "Priya",
    "Timothy",
    "Melissa",
    "Ronald",
    "Deborah",
    "Jorge",
    "Stephanie",
    "Jason",
    "Rebecca",
    "Aisha",
    "Sharon",
    "Ryan",
    "Laura",
    "Jacob",
    "Cynthia",
    "Nicholas",
    "Amy",
    "Eric",
    "Kathleen",
    "Jonathan",
    "Angela",
    "Hiroshi",
    "Shirley",
    "Samuel",
    "Emma",
    "Benjamin",
    "Olivia",
    "Mateo",
    "Sofia",
    "Luis",
    "Fatima",
    "Omar",
    "Mei",
    "Ivan",
    "Ana",
    "Noah",
    "Chloe",
    "Ethan",
    "Grace",
];

const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Chen",
    "Patel",
    "Kim",
    "Singh",
    "Okafor",
    "Kowalski",
    "Nakamura",
    "Haddad",
    "Novak",
    "Schmidt",
];

const DEPARTMENTS: &[(&str, &[&str])] = &[
    ("Engineering", &["Software Engineer", "Senior Software Engineer", "Staff Engineer", "Engineering Manager"]),
    ("Sales", &["Account Executive", "Sales Development Representative", "Sales Manager"]),
    ("Customer Success", &["Support Specialist", "Customer Success Manager"]),
    ("Finance", &["Accountant", "Financial Analyst", "Controller"]),
    ("People", &["HR Generalist", "Recruiter", "People Partner"]),
    ("Operations", &["Operations Associate", "Warehouse Associate", "Operations Manager"]),
    ("Marketing", &["Marketing Manager", "Content Strategist", "Designer"]),
    ("Product", &["Product Manager", "Product Designer"]),
];

const CITIES: &[(&str, &str, &str)] = &[
    ("Springfield", "IL", "62701"),
    ("Austin", "TX", "73301"),
    ("Denver", "CO", "80202"),
    ("Portland", "OR", "97201"),
    ("Columbus", "OH", "43004"),
    ("Raleigh", "NC", "27601"),
    ("Madison", "WI", "53703"),
    ("Tucson", "AZ", "85701"),
];

const STREETS: &[&str] = &["Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Pine Rd", "Lakeview Blvd"];

/// SplitMix64: a tiny, well-mixed, seedable stream (no dependency, the same on every machine).
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A seed from text (FNV-1a), so a roster follows its entity's id.
pub fn seed_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// What changed about one person since they were generated: fields laid over Finch's
/// individual and employment models (the sandbox endpoints and the control API write these).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Patch {
    #[serde(default)]
    pub individual: serde_json::Map<String, Value>,
    #[serde(default)]
    pub employment: serde_json::Map<String, Value>,
}

fn overlay(mut base: Value, patch: &serde_json::Map<String, Value>) -> Value {
    if let Some(obj) = base.as_object_mut() {
        for (k, v) in patch {
            if k != "id" {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

/// One entity's people: the generated ones and what changed since.
#[derive(Debug, Clone, Serialize)]
pub struct Roster {
    pub seed: u64,
    /// People generated (numbered `0..size`); hires are numbered from `size` on.
    pub size: u32,
    pub hired: u32,
    pub changes: BTreeMap<u32, Patch>,
    /// People gone from the provider altogether (no longer listed).
    pub removed: BTreeSet<u32>,
    /// The people this roster shows, when they are shared with other rosters.
    pub population: Option<Population>,
    /// Everyone paid biweekly in one pay group (no semimonthly group, no bonus run): the
    /// benchmark's company, two years of which is a million statements for 20,000 people.
    pub biweekly_only: bool,
}

/// People shared by several rosters: a company's workforce as each of its providers, or each
/// of its entities, shows it. Person `n` of a roster drawn from a population is person
/// `offset + n` of it: the same name, date of birth, SSN and job in every roster, under each
/// roster's own Finch id, and with each provider's own flaws (see [`Person::drawn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Population {
    pub seed: u64,
    pub offset: u32,
}

impl Roster {
    pub fn new(seed: u64, size: u32) -> Self {
        Self {
            seed,
            size,
            hired: 0,
            changes: BTreeMap::new(),
            removed: BTreeSet::new(),
            population: None,
            biweekly_only: false,
        }
    }

    /// A roster of `size` people drawn from `population`.
    pub fn drawn(seed: u64, size: u32, population: Population) -> Self {
        Self { population: Some(population), ..Self::new(seed, size) }
    }

    /// Who person `n` is, across rosters (the emulator's ground truth of the person index):
    /// the population's number, or the roster's own for someone only it has (a hire).
    pub fn truth(&self, n: u32) -> Option<String> {
        self.person(n)?;
        Some(match self.population {
            Some(pop) if n < self.size => format!("{:x}:{}", pop.seed, pop.offset + n),
            _ => format!("{:x}:{n}", self.seed),
        })
    }

    /// Everyone listed, in order.
    pub fn numbers(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.size + self.hired).filter(|n| !self.removed.contains(n))
    }

    /// How many are listed.
    pub fn len(&self) -> usize {
        (self.size + self.hired) as usize - self.removed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The person numbered `n` as generated (`None` once removed or never made).
    pub fn person(&self, n: u32) -> Option<Person> {
        if n >= self.size + self.hired || self.removed.contains(&n) {
            return None;
        }
        Some(match self.population {
            Some(pop) if n < self.size => Person::drawn(pop, self.seed, n),
            _ => Person::generate(self.seed, n, n >= self.size),
        })
    }

    fn patch(&self, n: u32) -> Option<&Patch> {
        self.changes.get(&n)
    }

    /// `/employer/individual`'s body for person `n`, changes applied.
    pub fn individual(&self, n: u32, with_ssn: bool) -> Option<Value> {
        let p = self.person(n)?;
        let mut v = p.individual(with_ssn);
        if let Some(patch) = self.patch(n) {
            v = overlay(v, &patch.individual);
            if !with_ssn && let Some(o) = v.as_object_mut() {
                o.remove("ssn");
            }
        }
        Some(v)
    }

    /// `/employer/employment`'s body for person `n`, changes applied.
    pub fn employment(&self, n: u32, entity_source_id: &str) -> Option<Value> {
        let p = self.person(n)?;
        let v = p.employment(entity_source_id);
        Some(match self.patch(n) {
            Some(patch) => overlay(v, &patch.employment),
            None => v,
        })
    }

    /// `/employer/directory`'s item for person `n`: names from the individual, the rest from the
    /// employment, as Finch's directory summarises both.
    pub fn directory(&self, n: u32) -> Option<Value> {
        let i = self.individual(n, false)?;
        let e = self.employment(n, "")?;
        Some(json!({
            "id": i["id"],
            "first_name": i["first_name"],
            "middle_name": i["middle_name"],
            "last_name": i["last_name"],
            "manager": e["manager"],
            "department": e["department"],
            "is_active": e["is_active"],
        }))
    }

    /// Lays `patch` over person `n`'s changes so far.
    pub fn change(&mut self, n: u32, patch: Patch) {
        let entry = self.changes.entry(n).or_default();
        entry.individual.extend(patch.individual);
        entry.employment.extend(patch.employment);
    }

    /// The number of the person with Finch id `id`, if listed.
    pub fn find(&self, id: &str) -> Option<u32> {
        let n = number_in_id(self.seed, id)?;
        self.person(n).map(|_| n)
    }

    /// Hires one more person; returns their number.
    pub fn hire(&mut self) -> u32 {
        self.hired += 1;
        self.size + self.hired - 1
    }
}

/// What pay needs to know of person `n`, changes applied (a raise, a termination).
#[derive(Debug, Clone)]
pub struct PayProfile {
    pub number: u32,
    pub id: String,
    pub hourly: bool,
    /// Yearly salary in cents, or the hourly rate in cents.
    pub income_cents: i64,
    pub start: time::Date,
    pub end: Option<time::Date>,
    pub contractor: bool,
    pub part_time: bool,
    /// Saves into a 401(k) (two in three do).
    pub retirement: bool,
}

impl Roster {
    /// Person `n`'s pay profile, from their employment as Finch would serve it.
    pub fn pay_profile(&self, n: u32) -> Option<PayProfile> {
        let e = self.employment(n, "")?;
        let date = |v: &Value| {
            v.as_str()
                .and_then(|s| time::Date::parse(s, &time::macros::format_description!("[year]-[month]-[day]")).ok())
        };
        let unit = e["income"]["unit"].as_str().unwrap_or("yearly");
        Some(PayProfile {
            number: n,
            id: e["id"].as_str()?.to_owned(),
            hourly: unit == "hourly",
            income_cents: e["income"]["amount"].as_i64().unwrap_or(0).max(0),
            start: date(&e["start_date"])?,
            end: date(&e["end_date"]),
            contractor: e["employment"]["type"] == "contractor",
            part_time: e["employment"]["subtype"] == "part_time",
            retirement: !mix(self.seed, u64::from(n), 401).is_multiple_of(3),
        })
    }
}

/// A well-mixed number from a seed and two values: what a payroll draws for a person and a
/// period, the same every time.
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut s = Stream(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    s.next()
}

/// A UUID v4 drawn from a seed and a tag (pay groups, payments): the same every time.
pub fn uuid_of(seed: u64, tag: u64) -> String {
    let mut s = Stream(seed ^ tag.wrapping_mul(0xA076_1D64_78BD_642F) ^ 0x5041_5952_4f4c_4c00);
    let (a, b) = (s.next(), s.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        8 + (b >> 62),
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// A person's id is a UUID v4 whose last group carries their number under the roster's seed,
/// so an id is found without an index: `xxxxxxxx-xxxx-4xxx-8xxx-SSSSNNNNNNNN`.
fn id_of(seed: u64, n: u32) -> String {
    let mut s = Stream(seed ^ u64::from(n).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let (a, b) = (s.next(), s.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:04x}{:08x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b & 0xfff,
        seed & 0xffff,
        n
    )
}

fn number_in_id(seed: u64, id: &str) -> Option<u32> {
    let last = id.rsplit('-').next()?;
    if last.len() != 12 || u64::from_str_radix(&last[..4], 16).ok()? != seed & 0xffff {
        return None;
    }
    let n = u32::from_str_radix(&last[4..], 16).ok()?;
    (id_of(seed, n) == id).then_some(n)
}

/// One employee, everything Finch's company, directory, individual and employment models say.
#[derive(Debug, Clone, Serialize)]
pub struct Person {
    pub number: u32,
    pub id: String,
    pub first_name: String,
    pub middle_name: Option<String>,
    pub last_name: String,
    pub preferred_name: Option<String>,
    pub dob: String,
    /// This provider does not return the date of birth.
    pub dob_withheld: bool,
    pub gender: &'static str,
    pub ssn: String,
    pub work_email: String,
    pub personal_email: String,
    pub phone: String,
    pub residence: (String, &'static str, &'static str, &'static str),
    pub department: String,
    pub title: String,
    pub manager: Option<u32>,
    pub manager_id: Option<String>,
    pub start_date: String,
    pub end_date: Option<String>,
    pub hourly: bool,
    /// Yearly salary in cents, or the hourly rate in cents.
    pub income_cents: i64,
    pub part_time: bool,
    pub contractor: bool,
}

impl Person {
    fn generate(seed: u64, n: u32, hired: bool) -> Self {
        let mut s = Stream(seed.wrapping_add(u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed);
        let first = (*s.pick(FIRST)).to_owned();
        let last = (*s.pick(LAST)).to_owned();
        let middle = (s.below(3) == 0).then(|| (*s.pick(FIRST)).to_owned());
        let gender = *s.pick(&["female", "male", "female", "male", "other", "decline_to_specify"]);
        let dob = format!("{}-{:02}-{:02}", 1955 + s.below(50), 1 + s.below(12), 1 + s.below(28));
        let ssn = format!("9{:02}-{:02}-{:04}", s.below(100), 1 + s.below(99), 1 + s.below(9999));
        let (dept, titles) =
            if n == 0 { ("Executive", &["Chief Executive Officer"][..]) } else { *s.pick(DEPARTMENTS) };
        let title = (*s.pick(titles)).to_owned();
        // A tree: everyone reports to someone numbered lower (person 0 to no one).
        let manager = (n > 0).then(|| s.below(u64::from(n).min(1 + u64::from(n) / 8).max(1)) as u32);
        let start_year = if hired { 2026 } else { 2008 + s.below(18) };
        let start_date = format!("{start_year}-{:02}-{:02}", 1 + s.below(12), 1 + s.below(28));
        let left = !hired && n > 0 && s.below(12) == 0;
        let end_date = left.then(|| {
            format!("{}-{:02}-{:02}", (start_year + 1 + s.below(3)).min(2026), 1 + s.below(12), 1 + s.below(28))
        });
        let contractor = n > 0 && s.below(25) == 0;
        let hourly = !contractor && dept == "Operations" && s.below(2) == 0;
        let income_cents =
            if hourly { 1_800 + 100 * s.below(25) as i64 } else { 100 * (42_000 + 1_000 * s.below(180) as i64) };
        let (city, state, zip) = *s.pick(CITIES);
        let street = format!("{} {}", 100 + s.below(9_800), s.pick(STREETS));
        let domain = format!("example-{:04x}.com", seed & 0xffff);
        let local = format!(
            "{}.{}{}",
            first.to_lowercase(),
            last.to_lowercase(),
            if n > 0 { n.to_string() } else { String::new() }
        );
        Self {
            number: n,
            id: id_of(seed, n),
            preferred_name: (s.below(10) == 0).then(|| first.chars().take(3).collect()),
            work_email: format!("{local}@{domain}"),
            personal_email: format!("{local}@mail.example.net"),
            phone: format!("+1555{:07}", s.below(10_000_000)),
            first_name: first,
            middle_name: middle,
            last_name: last,
            dob,
            dob_withheld: false,
            gender,
            ssn,
            residence: (street, city, state, zip),
            department: dept.to_owned(),
            title,
            manager,
            manager_id: manager.map(|m| id_of(seed, m)),
            start_date,
            end_date,
            hourly,
            income_cents,
            part_time: !contractor && s.below(10) == 0,
            contractor,
        }
    }

    /// Person `n` of a roster (seed `roster`) drawn from `pop`: the population's person
    /// `offset + n` under the roster's id, with the hard cases of reconciling people built in.
    ///
    /// - In the population, one person in fifty is a **namesake** of the one before: the same
    ///   first name, last name and date of birth, another SSN and e-mail (shared names happen
    ///   within one company, Finch warns).
    /// - Each roster, as a provider would, shows some people differently: about 3 in 100 under
    ///   another **last name** (a name changed at one provider only), 4 in 100 **without a date of
    ///   birth**, 5 in 100 with a **work e-mail** of another domain.
    pub fn drawn(pop: Population, roster: u64, n: u32) -> Self {
        let number = pop.offset + n;
        let mut p = Self::generate(pop.seed, number, false);
        if number % 50 == 7 {
            let before = Self::generate(pop.seed, number - 1, false);
            (p.first_name, p.last_name, p.dob) = (before.first_name, before.last_name, before.dob);
        }
        let mut s = Stream(roster ^ u64::from(number).wrapping_mul(0xD1B5_4A32_D192_ED03));
        match s.below(100) {
            0..=2 => {
                let other = s.pick(LAST);
                if *other != p.last_name {
                    p.last_name = (*other).to_owned();
                }
            }
            3..=6 => p.dob_withheld = true,
            7..=11 => {
                let local = p.work_email.split('@').next().unwrap_or_default().to_owned();
                p.work_email = format!("{local}@corp-{:04x}.example.net", roster & 0xffff);
            }
            _ => {}
        }
        p.number = n;
        p.id = id_of(roster, n);
        p.manager = p.manager.filter(|m| *m >= pop.offset).map(|m| m - pop.offset);
        p.manager_id = p.manager.map(|m| id_of(roster, m));
        p
    }

    pub fn is_active(&self) -> bool {
        self.end_date.is_none()
    }

    /// `/employer/individual`'s body; the SSN only when asked for and granted.
    pub fn individual(&self, with_ssn: bool) -> Value {
        let (line1, city, state, zip) = &self.residence;
        let mut v = json!({
            "id": self.id,
            "first_name": self.first_name,
            "middle_name": self.middle_name,
            "last_name": self.last_name,
            "preferred_name": self.preferred_name,
            "emails": [{"data": self.work_email, "type": "work"}, {"data": self.personal_email, "type": "personal"}],
            "phone_numbers": [{"data": self.phone, "type": "personal"}],
            "gender": self.gender,
            "ethnicity": null,
            "marital_status": null,
            "dob": if self.dob_withheld { None } else { Some(&self.dob) },
            "residence": {"line1": line1, "line2": null, "city": city, "state": state, "postal_code": zip, "country": "US", "name": null, "source_id": null},
        });
        if with_ssn {
            v["ssn"] = json!(self.ssn);
        }
        v
    }

    /// `/employer/employment`'s body.
    pub fn employment(&self, entity_source_id: &str) -> Value {
        let (unit, amount) = if self.hourly { ("hourly", self.income_cents) } else { ("yearly", self.income_cents) };
        let income = json!({"unit": unit, "amount": amount, "currency": "usd", "effective_date": self.start_date});
        json!({
            "id": self.id,
            "first_name": self.first_name,
            "middle_name": self.middle_name,
            "last_name": self.last_name,
            "title": self.title,
            "manager": self.manager_id.as_ref().map(|id| json!({"id": id})),
            "department": {"name": self.department},
            "employment": {
                "type": if self.contractor { "contractor" } else { "employee" },
                "subtype": if self.contractor { "individual_contractor" } else if self.part_time { "part_time" } else { "full_time" },
            },
            "start_date": self.start_date,
            "end_date": self.end_date,
            "latest_rehire_date": null,
            "is_active": self.is_active(),
            "employment_status": if self.is_active() { "active" } else { "terminated" },
            "flsa_status": if self.hourly { "non_exempt" } else { "exempt" },
            "union_code": null,
            "union_local": null,
            "highly_compensated_employee": !self.hourly && self.income_cents >= 15_500_000,
            "key_employee": self.number == 0,
            "class_code": null,
            "location": {"line1": "1 Main St", "line2": null, "city": "Springfield", "state": "IL", "postal_code": "62701", "country": "US", "name": "HQ", "source_id": null},
            "income": income,
            "income_history": [income],
            "custom_fields": [],
            "source_id": format!("{entity_source_id}-{:06}", self.number),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roster_is_the_same_every_time_and_ids_find_their_people() {
        let r = Roster::new(seed_of("entity-a"), 500);
        let again = Roster::new(seed_of("entity-a"), 500);
        assert_eq!(r.individual(42, true), again.individual(42, true));
        let other = Roster::new(seed_of("entity-b"), 500);
        assert_ne!(r.person(42).unwrap().id, other.person(42).unwrap().id);
        for n in [0, 1, 499] {
            let p = r.person(n).unwrap();
            assert_eq!(r.find(&p.id), Some(n));
            assert!(uuid::Uuid::parse_str(&p.id).is_ok(), "{}", p.id);
            assert_eq!(other.find(&p.id), None, "another roster's id");
        }
        assert!(r.person(500).is_none());
        assert_eq!(r.len(), 500);
    }

    #[test]
    fn managers_form_a_tree_and_some_people_have_left() {
        let r = Roster::new(seed_of("big"), 2_000);
        let people: Vec<Person> = r.numbers().filter_map(|n| r.person(n)).collect();
        assert!(people[0].manager.is_none());
        assert!(people[1..].iter().all(|p| p.manager.is_some_and(|m| m < p.number)));
        let left = people.iter().filter(|p| !p.is_active()).count();
        assert!((80..260).contains(&left), "about one in twelve has left: {left}");
        assert!(people.iter().all(|p| p.ssn.starts_with('9')), "never an SSN the SSA issues");
        let distinct: BTreeSet<&str> = people.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(distinct.len(), people.len());
    }

    #[test]
    fn changes_hires_and_removals_apply_on_top() {
        let mut r = Roster::new(seed_of("x"), 5);
        let mut patch = Patch::default();
        patch.individual.insert("last_name".into(), json!("Newname"));
        patch.employment.insert("title".into(), json!("Chief Coffee Officer"));
        r.change(2, patch);
        assert_eq!(r.individual(2, false).unwrap()["last_name"], "Newname");
        assert_eq!(r.directory(2).unwrap()["last_name"], "Newname");
        assert_eq!(r.employment(2, "EIN").unwrap()["title"], "Chief Coffee Officer");
        assert!(r.individual(2, false).unwrap().get("ssn").is_none());
        assert!(r.individual(2, true).unwrap()["ssn"].is_string());
        let n = r.hire();
        assert_eq!((n, r.len()), (5, 6));
        r.removed.insert(3);
        assert!(r.person(3).is_none() && r.find(&Person::generate(r.seed, 3, false).id).is_none());
        assert_eq!(r.numbers().collect::<Vec<_>>(), vec![0, 1, 2, 4, 5]);
    }

    #[test]
    fn rosters_drawn_from_one_population_show_the_same_people_with_each_providers_flaws() {
        let pop = Population { seed: seed_of("population|Acme"), offset: 0 };
        let (a, b) =
            (Roster::drawn(seed_of("gusto-entity"), 2_000, pop), Roster::drawn(seed_of("adp-entity"), 2_000, pop));
        let (mut renamed, mut no_dob, mut other_email, mut namesakes) = (0, 0, 0, 0);
        for n in 0..2_000 {
            let (x, y) = (a.person(n).unwrap(), b.person(n).unwrap());
            assert_ne!(x.id, y.id, "each provider has its own ids");
            assert_eq!(a.truth(n), b.truth(n), "one person");
            assert_eq!((&x.ssn, &x.first_name), (&y.ssn, &y.first_name));
            renamed += usize::from(x.last_name != y.last_name);
            no_dob += usize::from(x.dob_withheld) + usize::from(y.dob_withheld);
            other_email += usize::from(x.work_email != y.work_email);
            if n > 0 {
                let before = a.person(n - 1).unwrap();
                namesakes +=
                    usize::from((&before.first_name, &before.dob) == (&x.first_name, &x.dob) && before.ssn != x.ssn);
            }
            assert!(x.individual(false)["dob"].is_null() == x.dob_withheld);
        }
        assert!((60..180).contains(&renamed), "{renamed}");
        assert!((100..240).contains(&no_dob), "{no_dob}");
        assert!((120..300).contains(&other_email), "{other_email}");
        assert!((35..45).contains(&namesakes), "one in fifty: {namesakes}");
        // Another part of the population is other people.
        let c = Roster::drawn(seed_of("east"), 10, Population { offset: 1_995, ..pop });
        assert_eq!(c.truth(0), a.truth(1_995));
        assert_eq!(c.person(0).unwrap().ssn, a.person(1_995).unwrap().ssn);
        assert!(c.truth(9).is_some() && a.truth(2_004).is_none());
    }
}
