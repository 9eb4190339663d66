//! `pubsub-kafka-bridge-lambda`: the same handler on AWS Lambda (Function URLs, API Gateway, ALB).

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;

use lambda_http::service_fn;
use pubsub_kafka_bridge::lambda;

#[tokio::main]
async fn main() -> ExitCode {
    // Lambda starts the binary without arguments: the settings are its environment.
    let program = "pubsub-kafka-bridge-lambda";
    let service = match pubsub_kafka_bridge::configure(program, [program.into()])
        .and_then(|(_, config)| pubsub_kafka_bridge::start(config))
    {
        Ok(service) => service,
        Err(code) => return code,
    };
    // Keys and the Kafka connection are made during the init phase, before the first event.
    service.app().warm_up().await;
    let handler = service_fn(move |request| {
        let service = Arc::clone(&service);
        async move { Ok::<_, Infallible>(lambda::handle(&service, request).await) }
    });
    match lambda_http::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}
