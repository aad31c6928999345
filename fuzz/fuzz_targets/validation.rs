//! A Recommend request's message, as the wire brings it, through the real gRPC
//! handler over the embedded catalog: never a panic, and every answer is the
//! one docs/design.md's validation table gives (the check the proptest
//! properties use too).

#![no_main]

use bookshop_test_support::oracles::answer::check_answer;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use recommendations::{catalog::Catalog, grpc::RecommendationsService};
use recommendations_proto::v1::{RecommendationRequest, recommendations_server::Recommendations};
use std::sync::LazyLock;
use tokio::runtime::Runtime;
use tonic::Request;

static CATALOG: LazyLock<Catalog> =
    LazyLock::new(|| Catalog::embedded().expect("the embedded catalog loads"));
static SERVICE: LazyLock<RecommendationsService<Catalog>> =
    LazyLock::new(|| RecommendationsService::new(CATALOG.clone()));
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

fuzz_target!(|message: &[u8]| {
    // A message tonic cannot decode never reaches the handler.
    let Ok(request) = RecommendationRequest::decode(message) else {
        return;
    };
    let answer = RUNTIME
        .block_on(SERVICE.recommend(Request::new(request)))
        .map(tonic::Response::into_inner);
    if let Err(wrong) = check_answer(&CATALOG, &request, answer) {
        panic!("{wrong}");
    }
});
