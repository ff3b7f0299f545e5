//! Perch Sync (issue 17): the pay history — payments and pay statements — in process, on the
//! memory store against the in-process Finch.

use perch::domain::EntityId;
use perch::domain::sync::{ChangeOp, RecordKind};
use perch::flows::sync::{RunOutcome, Trigger};
use perch_tests::fast::Fast;
use perch_tests::syncing::*;
use serde_json::{Value, json};

const PAY: &[&str] = &["company", "directory", "individual", "employment", "payment", "pay_statement"];

/// What the emulator's payroll holds for `entity`: payments and statements.
fn payroll(f: &Fast, entity: &EntityId) -> (usize, usize, Vec<String>) {
    let p = f.finch.shared.world().payroll(entity.as_str());
    let statements = p.payments.iter().map(|x| p.statement_count(x)).sum();
    (p.payments.len(), statements, p.payments.iter().map(|x| x.id.clone()).collect())
}

async fn all_changes(f: &Fast, id: &perch::domain::ConnectionId) -> Vec<perch::flows::sync::view::Change> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = feed(f, id, cursor.as_deref()).await;
        out.extend(page.changes);
        if !page.has_more {
            return out;
        }
        cursor = Some(page.next_cursor);
    }
}

#[tokio::test]
async fn a_backfill_reads_two_years_of_pay_in_few_calls_and_the_feed_serves_it() {
    let (f, id, entity) = connected(PAY, &[]).await;
    let s = settings(&[]);
    let (payments, statements, _) = payroll(&f, &entity);
    // Two years and eleven months of semimonthly runs at least (the roster is drawn anew each run).
    assert!(payments >= 70 && statements > 700, "{payments} payments, {statements} statements");
    // Nine pay-statement requests a minute for routine work (Finch's 12, a quarter kept for
    // first syncs): a backfill of more waits for the window once.
    let continuations = sync_through(&f, &s, &id, Trigger::Connected).await;
    assert_eq!(continuations, usize::from(payments.div_ceil(10) > 9), "{payments} payments");

    let st = state(&f, &id).await;
    let pay = &st["pay"];
    assert_eq!(pay["state"], "current", "{st}");
    assert_eq!(pay["pay_periods_total"].as_u64(), Some(payments as u64), "{pay}");
    assert_eq!(pay["pay_periods_done"].as_u64(), Some(payments as u64));
    assert_eq!(pay["pay_statements"].as_u64(), Some(statements as u64));
    assert_eq!(pay["from"], "2024-01-01", "two full years and the year to date");
    assert_eq!(pay["listed_from"], "2024-01-01");
    assert_eq!(st["state"], "current");
    // The first window is a month; the next fits the rest of a small company's history.
    assert_eq!(f.finch_calls("GET", "/employer/payment"), 2);
    // Ten payments a request, each answered whole: the minimum the caps allow.
    assert_eq!(f.finch_calls("POST", "/employer/pay-statement"), payments.div_ceil(10));

    let changes = all_changes(&f, &id).await;
    let of = |k: RecordKind| changes.iter().filter(|c| c.kind == k && c.op == ChangeOp::Added).count();
    assert_eq!((of(RecordKind::Payment), of(RecordKind::PayStatement)), (payments, statements));
    let payment = changes.iter().find(|c| c.kind == RecordKind::Payment).unwrap();
    let body: Value = serde_json::from_str(payment.record.as_ref().unwrap().get()).unwrap();
    assert!(body["gross_pay"]["amount"].is_i64() && body.get("individual_ids").is_none(), "{body}");
    assert!(payment.id.starts_with(body["pay_date"].as_str().unwrap()), "{}", payment.id);
    let statement = changes.iter().find(|c| c.kind == RecordKind::PayStatement).unwrap();
    let body: Value = serde_json::from_str(statement.record.as_ref().unwrap().get()).unwrap();
    assert!(body["earnings"].is_array() && statement.id.ends_with(body["individual_id"].as_str().unwrap()));

    // At rest: sealed.
    let stored = f.mem.store.stored_record(&id, RecordKind::PayStatement, &entity, &statement.id).unwrap();
    assert!(!String::from_utf8_lossy(&stored.sealed).contains("gross_pay"));
    assert!(f.finch.violations().is_empty(), "{:?}", f.finch.violations());
    assert_no_pii_logged(&f, &entity);

    // Nothing changed at the employer: a refresh lists the last weeks again and fetches nothing.
    let before = f.finch_calls("POST", "/employer/pay-statement");
    assert_eq!(sync(&f, &s, &id, Trigger::Requested).await, RunOutcome::Finished);
    assert_eq!(f.finch_calls("POST", "/employer/pay-statement"), before);
    assert_eq!(f.finch_calls("GET", "/employer/payment"), 3);
    assert!(all_changes(&f, &id).await.len() == changes.len(), "nothing new in the feed");
}

#[tokio::test]
async fn large_payments_are_paged_and_requests_stay_within_their_statement_budget() {
    // Pages of 7 statements, 20 a request: three payments at most per request.
    let env = [("SYNC_PAY_STATEMENTS_PAGE", "7"), ("SYNC_PAY_STATEMENTS_PER_REQUEST", "20")];
    let (f, id, entity) = connected(PAY, &[]).await;
    let s = settings(&env);
    let (payments, statements, _) = payroll(&f, &entity);
    sync_through(&f, &s, &id, Trigger::Connected).await;
    let pay = state(&f, &id).await["pay"].clone();
    assert_eq!((pay["state"].as_str(), pay["pay_periods_done"].as_u64()), (Some("current"), Some(payments as u64)));
    assert_eq!(pay["pay_statements"].as_u64(), Some(statements as u64), "{pay}");
    let sent: Vec<Value> = f
        .finch
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/employer/pay-statement"))
        .map(|_| Value::Null)
        .collect();
    assert!(sent.len() > statements / 20, "{} requests for {statements} statements", sent.len());
    let changes = all_changes(&f, &id).await;
    let ids: std::collections::HashSet<&str> =
        changes.iter().filter(|c| c.kind == RecordKind::PayStatement).map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), statements, "every statement once, none lost between pages");
    assert!(f.finch.violations().is_empty(), "{:?}", f.finch.violations());
}

#[tokio::test]
async fn statements_finch_is_still_fetching_wait_alone_and_arrive_later() {
    let (f, id, entity) = connected(PAY, &[]).await;
    let s = settings(&[]);
    let (payments, _, ids) = payroll(&f, &entity);
    let latest = ids.last().unwrap().clone();
    f.finch
        .shared
        .world()
        .pay_pending
        .insert(entity.as_str().to_owned(), finch_emulator::payroll::Pending { latest: 1, ..Default::default() });
    sync_through(&f, &s, &id, Trigger::Connected).await;
    let st = state(&f, &id).await;
    let pay = &st["pay"];
    assert_eq!(pay["state"], "current", "the rest is in: {st}");
    assert_eq!(pay["waiting_for_finch"], 1);
    assert_eq!(pay["pay_periods_done"].as_u64(), Some(payments as u64 - 1));
    let next: time::OffsetDateTime = time::OffsetDateTime::parse(
        st["next_attempt_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let wait = next - f.app.clock.now();
    // Five minutes after Finch's 202 (the backfill may have waited a minute for its window since).
    assert!(
        wait > time::Duration::minutes(3) && wait <= time::Duration::minutes(5),
        "asked again in 5 minutes: {wait}"
    );

    // Too early: nothing is asked. Then Finch has them: that payment alone, in one request.
    let calls = f.finch_calls("POST", "/employer/pay-statement");
    f.finch.shared.world().pay_pending.clear();
    assert_eq!(sync(&f, &s, &id, Trigger::Scheduled).await, RunOutcome::Finished);
    assert_eq!(f.finch_calls("POST", "/employer/pay-statement"), calls, "not before its time");
    f.app.clock.advance(time::Duration::minutes(6));
    assert_eq!(sync(&f, &s, &id, Trigger::Scheduled).await, RunOutcome::Finished);
    assert_eq!(f.finch_calls("POST", "/employer/pay-statement"), calls + 1);
    let pay = state(&f, &id).await["pay"].clone();
    assert_eq!((pay["waiting_for_finch"].as_u64(), pay["pay_periods_done"].as_u64()), (Some(0), Some(payments as u64)));
    let latest_statements = all_changes(&f, &id)
        .await
        .into_iter()
        .filter(|c| c.kind == RecordKind::PayStatement && c.id.starts_with(&latest))
        .count();
    assert!(latest_statements > 0);
}

#[tokio::test]
async fn a_changed_payment_is_compared_statement_by_statement_and_a_voided_one_is_removed() {
    let (f, id, entity) = connected(PAY, &[]).await;
    let s = settings(&[]);
    sync_through(&f, &s, &id, Trigger::Connected).await;
    let before = all_changes(&f, &id).await;

    // A payment made at the employer today (the sandbox): two statements, one of them for a
    // person the directory does not know, one with money in another currency and a null.
    let someone = f.finch.shared.world().roster(entity.as_str()).person(1).unwrap().id;
    let stranger = "00000000-0000-4000-8000-00000000abcd";
    let odd = vec![
        json!({"individual_id": someone, "type": "off_cycle_payroll", "payment_method": "check", "total_hours": null,
               "gross_pay": {"amount": 50_000, "currency": "cad"}, "net_pay": {"amount": null, "currency": "cad"},
               "earnings": [{"type": "bonus", "name": "Bonus", "amount": null, "currency": "cad", "hours": null}],
               "taxes": null, "employee_deductions": null, "employer_contributions": null}),
        json!({"individual_id": stranger, "type": "off_cycle_payroll", "payment_method": "check", "total_hours": null,
               "gross_pay": {"amount": 1_000, "currency": "usd"}, "net_pay": {"amount": 900, "currency": "usd"},
               "earnings": [], "taxes": [], "employee_deductions": [], "employer_contributions": []}),
    ];
    let (made, _) = finch_emulator::payroll::add_payment(&f.finch.shared, entity.as_str(), None, None, Some(odd));
    assert_eq!(sync(&f, &s, &id, Trigger::Requested).await, RunOutcome::Finished);
    let after = all_changes(&f, &id).await;
    let new: Vec<_> = after[before.len()..].iter().collect();
    assert_eq!(new.iter().filter(|c| c.kind == RecordKind::Payment).count(), 1, "{new:?}");
    let statements: Vec<_> = new.iter().filter(|c| c.kind == RecordKind::PayStatement).collect();
    assert_eq!(statements.len(), 2, "both kept, the stranger's too");
    assert!(statements.iter().any(|c| c.id == format!("{made}.{stranger}")));
    assert_eq!(state(&f, &id).await["pay"]["state"], "current");

    // The payment is voided at the provider: it and its statements leave the store.
    {
        let mut w = f.finch.shared.world();
        w.sandbox_payments.clear();
        w.touch(entity.as_str());
    }
    assert_eq!(sync(&f, &s, &id, Trigger::Requested).await, RunOutcome::Finished);
    let last = all_changes(&f, &id).await;
    let removed: Vec<_> = last[after.len()..].iter().filter(|c| c.op == ChangeOp::Removed).collect();
    assert_eq!(removed.len(), 3, "the payment and its two statements: {removed:?}");
    assert!(removed.iter().all(|c| c.id.contains(&made)));
    assert!(f.mem.store.stored_record(&id, RecordKind::PayStatement, &entity, &format!("{made}.{stranger}")).is_none());
}

#[tokio::test]
async fn without_the_pay_products_the_organization_syncs_and_pay_says_what_is_missing() {
    let (f, id, _) = connected(ORG, &[]).await;
    let s = settings(&[]);
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    let st = state(&f, &id).await;
    assert_eq!(st["state"], "current");
    assert_eq!(st["pay"]["state"], "missing_scope", "{st}");
    assert_eq!(st["pay"]["products"], json!(["payment", "pay_statement"]));
    assert_eq!(f.finch_calls("GET", "/employer/payment"), 0, "nothing asked that Finch would refuse");
}

#[tokio::test]
async fn a_backfill_cut_by_the_deadline_resumes_without_refetching_or_losing_a_statement() {
    // One payment-statement request a minute: each invocation gets one, then must hand back.
    let env = [("FINCH_PRODUCT_LIMIT", "2"), ("SYNC_DEADLINE_MARGIN_SECONDS", "1")];
    let (f, id, entity) = connected(PAY, &[]).await;
    let s = settings(&env);
    let (payments, statements, _) = payroll(&f, &entity);
    let mut continuations = 0;
    let mut work = perch::flows::sync::SyncWork::new(id.clone(), Trigger::Connected);
    loop {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        match perch::flows::sync::run(&f.app, &s, &work, deadline).await.unwrap() {
            RunOutcome::Continue { work: next, .. } => {
                continuations += 1;
                work = next;
                // The window rolls.
                f.app.clock.advance(time::Duration::minutes(1));
                let pay = state(&f, &id).await["pay"].clone();
                assert_eq!(pay["state"], "backfilling", "{pay}");
            }
            RunOutcome::Finished => break,
            other => panic!("{other:?}"),
        }
        assert!(continuations < 40, "the backfill moves on");
    }
    assert!(continuations > 3, "{continuations}");
    let pay = state(&f, &id).await["pay"].clone();
    assert_eq!(pay["pay_periods_done"].as_u64(), Some(payments as u64), "{pay}");
    assert_eq!(pay["pay_statements"].as_u64(), Some(statements as u64));
    assert_eq!(f.finch_calls("POST", "/employer/pay-statement"), payments.div_ceil(10), "no request made twice");
    let added = all_changes(&f, &id).await.iter().filter(|c| c.kind == RecordKind::PayStatement).count();
    assert_eq!(added, statements);
}

#[tokio::test]
async fn an_answer_broken_off_midway_keeps_what_was_written_and_is_asked_again_from_there() {
    let (f, id, entity) = connected(PAY, &[]).await;
    let s = settings(&[]);
    let (payments, statements, _) = payroll(&f, &entity);
    // The first pay-statement answer (ten payments, ~100 statements) stops a third of the way in.
    f.finch.shared.world().cut = Some(("/employer/pay-statement".to_owned(), 40_000));
    sync_through(&f, &s, &id, Trigger::Connected).await;

    let pay = state(&f, &id).await["pay"].clone();
    assert_eq!(pay["state"], "current", "{pay}");
    assert_eq!(pay["pay_periods_done"].as_u64(), Some(payments as u64));
    assert_eq!(pay["pay_statements"].as_u64(), Some(statements as u64), "none lost, none twice");
    let changes = all_changes(&f, &id).await;
    let ids: Vec<&str> = changes.iter().filter(|c| c.kind == RecordKind::PayStatement).map(|c| c.id.as_str()).collect();
    let distinct: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (statements, statements), "each statement added once");
    // One request more than the minimum: the broken one, asked again from its last write.
    assert_eq!(f.finch_calls("POST", "/employer/pay-statement"), payments.div_ceil(10) + 1);
    let said = perch_tests::captured_logs();
    assert!(said.contains("a pay-statement answer broke off"), "{said}");
    assert!(!said.contains("individual_id") && !said.contains("gross_pay"), "no statement in the logs");
}

#[tokio::test]
async fn a_webhook_naming_an_old_payment_has_its_statements_read_again() {
    let (f, id, entity) = connected(PAY, &[]).await;
    let s = settings(&[]);
    // A payment of 200 days ago, older than a refresh lists again.
    let old = f.app.clock.now().date() - time::Duration::days(200);
    let someone = f.finch.shared.world().roster(entity.as_str()).person(1).unwrap().id;
    let statement = |gross: i64| {
        json!({"individual_id": someone, "type": "off_cycle_payroll", "payment_method": "check", "total_hours": null,
               "gross_pay": {"amount": gross, "currency": "usd"}, "net_pay": {"amount": gross - 100, "currency": "usd"},
               "earnings": [], "taxes": [], "employee_deductions": [], "employer_contributions": []})
    };
    let (made, _) = finch_emulator::payroll::add_payment(
        &f.finch.shared,
        entity.as_str(),
        Some(old),
        Some(old),
        Some(vec![statement(5_000)]),
    );
    sync_through(&f, &s, &id, Trigger::Connected).await;
    let before = all_changes(&f, &id).await.len();

    // The provider corrects that payment's statement; a refresh alone does not look that far back.
    {
        let mut w = f.finch.shared.world();
        let p = w.sandbox_payments.get_mut(entity.as_str()).unwrap().iter_mut().find(|p| p.id == made).unwrap();
        p.statements = std::sync::Arc::new(vec![statement(6_000)]);
        w.touch(entity.as_str());
    }
    sync_through(&f, &s, &id, Trigger::Requested).await;
    assert_eq!(all_changes(&f, &id).await.len(), before, "not seen without the hint");
    // Finch's `pay_statement.updated` names it: read again, compared, the change in the feed.
    let mut work = perch::flows::sync::SyncWork::new(id.clone(), Trigger::Webhook);
    work.payments = Some(vec![made.clone()]);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    assert_eq!(perch::flows::sync::run(&f.app, &s, &work, deadline).await.unwrap(), RunOutcome::Finished);
    let changes = all_changes(&f, &id).await;
    // The payment's totals and its statement, both updated (the listing reached back to it).
    let new: Vec<(RecordKind, ChangeOp)> = changes[before..].iter().map(|c| (c.kind, c.op)).collect();
    assert_eq!(new, [(RecordKind::Payment, ChangeOp::Updated), (RecordKind::PayStatement, ChangeOp::Updated)]);
    assert!(changes.last().unwrap().record.as_ref().unwrap().get().contains("6000"));
}

#[tokio::test]
async fn pay_older_than_the_retention_is_never_fetched_and_deleted_as_it_ages() {
    let env = [("SYNC_PAY_RETENTION_DAYS", "400")];
    let (f, id, entity) = connected(PAY, &[]).await;
    let s = settings(&env);
    sync_through(&f, &s, &id, Trigger::Connected).await;
    let today = f.app.clock.now().date();
    let cutoff = today - time::Duration::days(400);
    let pay = state(&f, &id).await["pay"].clone();
    assert_eq!(pay["from"], cutoff.to_string(), "{pay}");
    let kept: Vec<String> = {
        let p = f.finch.shared.world().payroll(entity.as_str());
        p.payments.iter().filter(|x| x.pay_date >= cutoff).map(|x| x.id.clone()).collect()
    };
    assert_eq!(pay["pay_periods_total"].as_u64(), Some(kept.len() as u64), "only what the retention keeps");
    let changes = all_changes(&f, &id).await;
    assert!(
        changes.iter().filter(|c| c.kind == RecordKind::Payment).all(|c| c.id.as_str() >= cutoff.to_string().as_str())
    );

    // A month on, the oldest month is deleted: payments and their statements.
    f.app.clock.advance(time::Duration::days(30));
    sync_through(&f, &s, &id, Trigger::Requested).await;
    let later = all_changes(&f, &id).await;
    let removed: Vec<_> = later[changes.len()..].iter().filter(|c| c.op == ChangeOp::Removed).collect();
    let new_cutoff = (cutoff + time::Duration::days(30)).to_string();
    let payments: Vec<_> = removed.iter().filter(|c| c.kind == RecordKind::Payment).collect();
    assert!(!payments.is_empty() && payments.iter().all(|c| c.id.as_str() < new_cutoff.as_str()), "{payments:?}");
    assert!(removed.iter().any(|c| c.kind == RecordKind::PayStatement), "their statements too");
    let pay = state(&f, &id).await["pay"].clone();
    assert_eq!(pay["from"], new_cutoff);
    assert_eq!(pay["pay_periods_total"].as_u64(), Some((kept.len() - payments.len()) as u64), "{pay}");
}
