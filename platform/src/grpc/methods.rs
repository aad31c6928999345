//! The gRPC methods a process knows, read from its services' descriptor sets:
//! they bound the label values of metrics and the names of spans.

use prost::Message as _;
use prost_types::FileDescriptorSet;
use std::fmt;

/// One gRPC method as metrics and spans name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rpc {
    /// Fully qualified, e.g. `recommendations.v1.Recommendations`.
    pub service: String,
    pub method: String,
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`, as
    /// go-grpc-prometheus writes the `grpc_type` label.
    pub kind: &'static str,
}

impl Rpc {
    /// What every path outside the descriptor sets is named: one value, so a
    /// caller cannot mint series or span names.
    pub const UNKNOWN: &'static str = "unknown";

    pub(crate) fn unknown() -> Self {
        let unknown = Self::UNKNOWN.to_owned();
        Self {
            service: unknown.clone(),
            method: unknown,
            kind: Self::UNKNOWN,
        }
    }

    /// Whether this is the health check probes send every few seconds: traced
    /// and logged at debug only, so probes do not bury the calls people look
    /// for (metrics still count them).
    pub fn is_probe(&self) -> bool {
        self.service == "grpc.health.v1.Health" && self.method == "Check"
    }

    pub fn is_unknown(&self) -> bool {
        self.kind == Self::UNKNOWN
    }

    /// Every method of every service in the encoded `FileDescriptorSet`s.
    pub fn all_in(sets: &[&[u8]]) -> Result<Vec<Self>, prost::DecodeError> {
        let mut rpcs = Vec::new();
        for set in sets {
            for file in FileDescriptorSet::decode(*set)?.file {
                let package = file.package();
                for service in &file.service {
                    let service_name = match package {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    for method in &service.method {
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        let (service, method) = (service_name.clone(), method.name().to_owned());
                        rpcs.push(Rpc {
                            service,
                            method,
                            kind,
                        });
                    }
                }
            }
        }
        Ok(rpcs)
    }

    /// The wire path, `/package.Service/Method`.
    pub fn path(&self) -> String {
        format!("/{self}")
    }
}

/// `{service}/{method}`: the span name the OpenTelemetry RPC conventions ask for.
impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};

    fn method(name: &str, client_streaming: bool, server_streaming: bool) -> MethodDescriptorProto {
        MethodDescriptorProto {
            name: Some(name.into()),
            client_streaming: Some(client_streaming),
            server_streaming: Some(server_streaming),
            ..Default::default()
        }
    }

    #[test]
    fn methods_are_named_by_path_with_their_streaming_kind() {
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("shop.v1".into()),
                service: vec![ServiceDescriptorProto {
                    name: Some("Shop".into()),
                    method: vec![
                        method("Get", false, false),
                        method("Upload", true, false),
                        method("Watch", false, true),
                        method("Chat", true, true),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let rpcs = Rpc::all_in(&[&set]).unwrap();
        let resolve = |path| rpcs.iter().find(|rpc| rpc.path() == path).unwrap();

        let kind = |path| resolve(path).kind;
        assert_eq!(kind("/shop.v1.Shop/Get"), "unary");
        assert_eq!(kind("/shop.v1.Shop/Upload"), "client_stream");
        assert_eq!(kind("/shop.v1.Shop/Watch"), "server_stream");
        assert_eq!(kind("/shop.v1.Shop/Chat"), "bidi_stream");
        let get = resolve("/shop.v1.Shop/Get");
        assert_eq!(
            (get.service.as_str(), get.method.as_str()),
            ("shop.v1.Shop", "Get")
        );
        assert_eq!(get.to_string(), "shop.v1.Shop/Get");
        assert_eq!(rpcs.len(), 4);
    }

    #[test]
    fn a_corrupt_descriptor_set_is_an_error() {
        assert!(Rpc::all_in(&[b"\xff\xff"]).is_err());
    }
}
