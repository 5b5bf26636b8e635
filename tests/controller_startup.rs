//! Startup: the controller reconciles the first list's resources page by page, without waiting
//! for the list's end, and a first list cut off half-way is finished by listing again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use blob_backup_operator::controller::decide::Timing;
use blob_backup_operator::controller::{ControllerConfig, LIST_PAGE_SIZE};
use testkit::fake_apiserver::Verb;
use testkit::scenario::{Harness, RESOURCE, controller_config, spec, test_timing, wait_until};

/// The resources of one list page.
const PAGE: usize = LIST_PAGE_SIZE as usize;

fn name(i: usize) -> String {
    format!("r{i:04}")
}

#[tokio::test]
async fn reconciles_start_with_the_first_page_and_a_cut_list_is_listed_again() {
    let h = Harness::with_accounts(&[]).await;
    // One page and one more resource, with a storage account id that is no ARM id (this
    // stand-in has no schema to refuse it): each is looked at once and stalls without a call
    // to Azure (not again within the test), which is all this test needs of a reconcile.
    for i in 0..=PAGE {
        h.create(&name(i), spec("not-an-arm-id", "BlobBackup-Policy"));
    }
    // The first list's second page gets no answer (as from an API server that stalls), until
    // the connections drop.
    let lists = Arc::new(AtomicUsize::new(0));
    let counted = lists.clone();
    h.api.hang_where(move |info| {
        info.verb == Verb::List
            && info.is_resource(RESOURCE)
            && counted.fetch_add(1, Ordering::SeqCst) == 1
    });
    let timing = Timing {
        stalled_retry_base: Duration::from_secs(120),
        stalled_retry_max: Duration::from_secs(120),
        ..test_timing()
    };
    let config = ControllerConfig {
        concurrency: 32,
        ..controller_config(timing, "test")
    };
    let controller = h.controller_configured(config, dataprotection::DEFAULT_API_VERSION);

    let reconciled = |name: &str| h.get(name).is_some_and(|o| !o["status"].is_null());
    wait_until("every resource of the first page is reconciled", || {
        (0..PAGE).all(|i| reconciled(&name(i)))
    })
    .await;
    assert_eq!(
        lists.load(Ordering::SeqCst),
        2,
        "the second page was asked for and is still unanswered"
    );
    assert!(
        !reconciled(&name(PAGE)),
        "the second page's resource cannot have been reconciled yet"
    );

    // The hung page fails for good (kube's client retries a 503, not a 500): the watcher lists
    // again from the start, and the second page's resource follows.
    h.api.fail_next_where(1, 500, |info| {
        info.verb == Verb::List && info.is_resource(RESOURCE)
    });
    h.api.drop_watches();
    wait_until("the second page's resource is reconciled", || {
        reconciled(&name(PAGE))
    })
    .await;
    assert!(
        lists.load(Ordering::SeqCst) >= 5,
        "listed again from the start, both pages: {lists:?}"
    );
    controller.stop().await;
}
