//! Unit tests of the conversion from OTLP items to stored rows and evidence input.

use super::*;
use opentelemetry_proto::tonic::logs::v1::ScopeLogs;
use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(string(v)),
        ..Default::default()
    }
}

/// Rows assembled from parts encoded once are byte for byte what prost encodes (the digest
/// of a stored row must not depend on how it was built).
#[test]
fn stored_rows_are_what_prost_encodes() {
    let r = Redactor::new(&["*token*".to_owned()]);
    let resources = [
        None,
        Some(Resource {
            attributes: vec![kv("service.name", "api"), kv("x.token", "secret")],
            ..Default::default()
        }),
    ];
    let scopes = [
        None,
        Some(InstrumentationScope {
            name: "s".into(),
            version: "1".into(),
            ..Default::default()
        }),
    ];
    for resource in &resources {
        for scope in &scopes {
            for (res_schema, scope_schema) in [("", ""), ("https://a", ""), ("", "https://b")] {
                let part = ResourcePart::new(resource.clone(), res_schema.into());
                let o = Origin::new(part, scope.clone(), scope_schema.into());
                let span = Span {
                    name: "n".repeat(300),
                    trace_id: vec![1; 16],
                    ..Default::default()
                };
                let mut redacted = resource.clone();
                if let Some(res) = redacted.as_mut() {
                    redact(&mut res.attributes, &r);
                }
                let want = ResourceSpans {
                    resource: redacted.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: scope.clone(),
                        spans: vec![span.clone()],
                        schema_url: scope_schema.into(),
                    }],
                    schema_url: res_schema.into(),
                }
                .encode_to_vec();
                assert_eq!(o.stored_body(&r, &span.encode_to_vec()), want);
                let record = LogRecord {
                    severity_text: "INFO".into(),
                    ..Default::default()
                };
                let want = ResourceLogs {
                    resource: redacted,
                    scope_logs: vec![ScopeLogs {
                        scope: scope.clone(),
                        log_records: vec![record.clone()],
                        schema_url: scope_schema.into(),
                    }],
                    schema_url: res_schema.into(),
                }
                .encode_to_vec();
                assert_eq!(o.stored_body(&r, &record.encode_to_vec()), want);
            }
        }
    }
}

#[test]
fn the_subject_message_names_the_limit() {
    assert!(SUBJECT_TOO_LONG.contains(&format!(" {MAX_SUBJECT_BYTES} bytes")));
}

/// One resource over many scopes is one allocation, not one per scope.
#[test]
fn a_resource_is_shared_by_all_its_scopes() {
    let request = vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", "api")],
            ..Default::default()
        }),
        scope_spans: (0..3)
            .map(|_| ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }];
    let (items, rej) = spans(request, 10, 0);
    assert_eq!(rej.count, 0);
    assert_eq!(items.len(), 3);
    assert!(Arc::ptr_eq(&items[0].origin.res, &items[2].origin.res));
    assert!(!Arc::ptr_eq(&items[0].origin, &items[2].origin));
}

/// The journal's request is what prost encodes for the same spans grouped by resource and
/// scope, unredacted (the journal is encrypted; redaction happens when a row is stored), and it
/// converts back to the same spans with the same origins.
#[test]
fn journaled_spans_are_the_request_prost_encodes_and_come_back_whole() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let span = |n: u8| Span {
        name: format!("s{n}"),
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Default::default()
    };
    let res = |name: &str| Resource {
        attributes: vec![kv("service.name", name), kv("x.token", "secret")],
        ..Default::default()
    };
    let scope = |name: &str| InstrumentationScope {
        name: name.into(),
        ..Default::default()
    };
    let request = vec![
        ResourceSpans {
            resource: Some(res("a")),
            scope_spans: vec![
                ScopeSpans {
                    scope: Some(scope("x")),
                    spans: vec![span(1), span(2)],
                    schema_url: "https://scope".into(),
                },
                ScopeSpans {
                    scope: None,
                    spans: vec![span(3)],
                    schema_url: String::new(),
                },
            ],
            schema_url: "https://res".into(),
        },
        ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: Some(scope("y")),
                spans: vec![span(4)],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        },
    ];
    let want = ExportTraceServiceRequest {
        resource_spans: request.clone(),
    }
    .encode_to_vec();
    let (items, rej) = spans(request, 10, 0);
    assert_eq!((items.len(), rej.count), (4, 0));
    let parked: Vec<ParkedSpan> = items.into_iter().map(ParkedSpan::park).collect();
    let got = journal_request(&parked);
    assert_eq!(got, want);
    let back = ExportTraceServiceRequest::decode(got.as_slice()).unwrap();
    let (again, _) = spans(back.resource_spans, 10, 0);
    let names: Vec<(String, String)> = again
        .iter()
        .map(|i| (i.span.name.clone(), i.origin.res.service.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("s1", "a"),
            ("s2", "a"),
            ("s3", "a"),
            ("s4", "unknown_service")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(journal_request(&[]).is_empty());
}
