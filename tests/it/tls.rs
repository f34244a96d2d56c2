//! TLS and mTLS on every listener: REST, OTLP/HTTP and OTLP/gRPC.

use crate::support::otlp::{deploy_span, request, trace};
use crate::support::server::{TestDb, config, spawn_app_with};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use std::path::Path;

struct Pki {
    ca: String,
    client_cert: String,
    client_key: String,
}

/// A CA, a server certificate for localhost (written to `dir`) and a client certificate.
fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let issue = |name: &str, purpose: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = issue("collector.example", ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(dir.join("server.pem"), server_cert).unwrap();
    std::fs::write(dir.join("server.key"), server_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    Pki {
        ca: ca.pem(),
        client_cert,
        client_key,
    }
}

fn https(url: &str) -> String {
    url.replace("http://127.0.0.1", "https://localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_on_every_listener() {
    for mutual in [false, true] {
        let db = TestDb::sqlite().await;
        let pki = pki(db.path());
        let mut cfg = config(&db);
        cfg.tls.cert_file = db.path().join("server.pem");
        cfg.tls.key_file = db.path().join("server.key");
        if mutual {
            cfg.tls.client_ca_file = db.path().join("ca.pem");
        }
        let app = spawn_app_with(cfg).await;
        let ca = reqwest::Certificate::from_pem(pki.ca.as_bytes()).unwrap();
        let identity = reqwest::Identity::from_pem(
            format!("{}{}", pki.client_cert, pki.client_key).as_bytes(),
        )
        .unwrap();
        let with_cert = reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .identity(identity)
            .build()
            .unwrap();
        let without_cert = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();

        // REST over TLS.
        let r = with_cert
            .get(format!("{}/healthz", https(&app.base)))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        // Plain HTTP to a TLS listener gets nowhere.
        let plain = reqwest::get(format!("{}/healthz", app.base)).await;
        assert!(plain.is_err() || !plain.unwrap().status().is_success());

        // OTLP/HTTP over TLS.
        let body = request("svc", vec![deploy_span(trace(), "CHG-TLS")]).encode_to_vec();
        let post = |c: &reqwest::Client| {
            c.post(format!("{}/v1/traces", https(&app.otlp)))
                .header("content-type", "application/x-protobuf")
                .bearer_auth(&app.ingest)
                .body(body.clone())
                .send()
        };
        assert_eq!(
            post(&with_cert).await.unwrap().status(),
            reqwest::StatusCode::OK
        );
        let anonymous = post(&without_cert).await;
        if mutual {
            assert!(
                anonymous.is_err(),
                "mTLS must refuse a client without a certificate"
            );
        } else {
            assert_eq!(anonymous.unwrap().status(), reqwest::StatusCode::OK);
        }

        // OTLP/gRPC over TLS (HTTP/2 negotiated by ALPN).
        let grpc = |identity: bool| {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca))
                .domain_name("localhost");
            if identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    &pki.client_cert,
                    &pki.client_key,
                ));
            }
            let endpoint = tonic::transport::Endpoint::from_shared(https(&app.grpc))
                .unwrap()
                .tls_config(tls)
                .unwrap();
            let token = format!("Bearer {}", app.ingest);
            async move {
                let channel = endpoint.connect().await?;
                let mut client = TraceServiceClient::new(channel);
                let mut req =
                    tonic::Request::new(request("svc", vec![deploy_span(trace(), "CHG-TLS")]));
                req.metadata_mut()
                    .insert("authorization", token.parse().unwrap());
                client
                    .export(req)
                    .await
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            }
        };
        grpc(true).await.unwrap();
        assert_eq!(grpc(false).await.is_err(), mutual, "mutual={mutual}");
        app.stop().await;
    }
}
