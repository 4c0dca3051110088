//! The `runtime.v1.ImageService` implementation and the server loop.

use crate::images;
use crate::proto::image_service_server::{ImageService, ImageServiceServer};
use crate::proto::{
    AuthConfig, ImageFsInfoRequest, ImageFsInfoResponse, ImageStatusRequest, ImageStatusResponse,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse,
};
use crate::pulls::Pulls;
use crate::{fsinfo, Backend, BackendError, BoundSocket, ErrorKind, ServeError, ServeOptions};
use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;
use stowage_oci::Reference;
use stowage_remote::Credentials;
use stowage_store::Store;
use tonic::{Request, Response, Status};

/// The ImageService over one store.
pub struct CriImages {
    store: Arc<Store>,
    backend: Arc<dyn Backend>,
    pulls: Arc<Pulls>,
    plain_http_registries: Vec<String>,
}

impl CriImages {
    pub fn new(store: Arc<Store>, backend: Arc<dyn Backend>, opts: &ServeOptions) -> CriImages {
        CriImages {
            pulls: Arc::new(Pulls::new(
                store.clone(),
                backend.clone(),
                opts.pull_progress_timeout,
            )),
            store,
            backend,
            plain_http_registries: opts.plain_http_registries.clone(),
        }
    }

    /// Run `f` with the store on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store, &dyn Backend) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(&store, &*backend))
            .await
            .map_err(|e| Status::internal(format!("worker failed: {e}")))?
            .map_err(Status::from)
    }
}

fn spec_image(spec: Option<&crate::proto::ImageSpec>) -> String {
    spec.map(|s| s.image.trim().to_string()).unwrap_or_default()
}

/// Credentials from a CRI `AuthConfig`, in containerd's order (`ParseAuth`):
/// a username (with its password), else an identity token (an OAuth2
/// refresh token: empty username, the token as password), else `auth`
/// (base64 `user:password`). A bare `registry_token` is not supported by
/// containerd either: the pull goes anonymous, with a warning.
fn credentials(auth: Option<&AuthConfig>) -> Result<Option<Credentials>, Status> {
    let Some(a) = auth else { return Ok(None) };
    if !a.username.is_empty() {
        return Ok(Some(Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
        }));
    }
    if !a.identity_token.is_empty() {
        return Ok(Some(Credentials {
            username: String::new(),
            password: a.identity_token.clone(),
        }));
    }
    if !a.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|_| Status::invalid_argument("auth.auth is not valid base64"))?;
        let s = String::from_utf8(raw)
            .map_err(|_| Status::invalid_argument("auth.auth is not UTF-8"))?;
        return match s.split_once(':') {
            Some((u, p)) => Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            })),
            None => Err(Status::invalid_argument(
                "auth.auth must encode user:password",
            )),
        };
    }
    if !a.registry_token.is_empty() {
        tracing::warn!(
            "auth.registry_token is not supported (nor by containerd); pulling anonymously"
        );
    }
    Ok(None)
}

#[tonic::async_trait]
impl ImageService for CriImages {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = spec_image(
            request
                .get_ref()
                .filter
                .as_ref()
                .and_then(|f| f.image.as_ref()),
        );
        let images = self
            .blocking(move |store, backend| {
                if filter.is_empty() {
                    Ok(images::all(store, backend)?
                        .iter()
                        .map(images::to_cri)
                        .collect())
                } else {
                    Ok(images::find(store, backend, &filter)?
                        .iter()
                        .map(images::to_cri)
                        .collect())
                }
            })
            .await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let spec = spec_image(req.image.as_ref());
        let verbose = req.verbose;
        let resp = self
            .blocking(move |store, backend| {
                let Some(entry) = images::find(store, backend, &spec)? else {
                    return Ok(ImageStatusResponse::default());
                };
                let mut info = HashMap::new();
                if verbose {
                    info.insert("info".to_string(), images::verbose_info(store, &entry)?);
                }
                Ok(ImageStatusResponse {
                    image: Some(images::to_cri(&entry)),
                    info,
                })
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = request.into_inner();
        let spec = spec_image(req.image.as_ref());
        if spec.is_empty() {
            return Err(Status::invalid_argument("PullImage: image spec is empty"));
        }
        let reference: Reference = spec
            .parse()
            .map_err(|e: stowage_oci::ReferenceError| Status::invalid_argument(e.to_string()))?;
        let creds = credentials(req.auth.as_ref())?;
        let plain = crate::plain_http(&reference.registry, &self.plain_http_registries);
        let image_ref = self
            .pulls
            .pull(reference, creds, plain)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let spec = spec_image(request.get_ref().image.as_ref());
        self.blocking(move |store, backend| {
            let Some(entry) = images::find(store, backend, &spec)? else {
                tracing::debug!(image = %spec, "RemoveImage: no such image; nothing to do");
                return Ok(());
            };
            // As containerd: every name of the image goes. Content stays until gc.
            for rec in &entry.records {
                store.meta.remove_image(&rec.name).map_err(|e| {
                    BackendError::new(ErrorKind::Internal, format!("remove {}: {e}", rec.name))
                })?;
                tracing::info!(image = %rec.name, id = %entry.id, "removed");
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let image_filesystems = self
            .blocking(|store, _| Ok(fsinfo::image_filesystems(store.root())))
            .await?;
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems,
            container_filesystems: Vec::new(),
        }))
    }
}

/// Wait for SIGTERM or SIGINT.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

pub(crate) async fn run(
    mut bound: BoundSocket,
    store: Arc<Store>,
    backend: Arc<dyn Backend>,
    opts: ServeOptions,
) -> Result<(), ServeError> {
    let std_listener = bound.listener.take().expect("a bound listener");
    let listener =
        tokio::net::UnixListener::from_std(std_listener).map_err(|e| ServeError::Socket {
            path: bound.path().to_path_buf(),
            detail: e.to_string(),
        })?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let service = CriImages::new(store.clone(), backend, &opts);
    tracing::info!(
        socket = %bound.path().display(),
        root = %store.root().display(),
        pull_progress_timeout = ?opts.pull_progress_timeout,
        "serving the CRI ImageService (runtime.v1)"
    );
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let path = bound.path().to_path_buf();
    // The first signal drains; a second one exits at once.
    tokio::spawn(async move {
        let sig = shutdown_signal().await;
        tracing::info!("{sig}: no new calls; waiting for the calls in flight to finish");
        let _ = first_tx.send(());
        let sig = shutdown_signal().await;
        tracing::warn!("{sig} again: exiting without waiting for the calls in flight");
        let _ = std::fs::remove_file(&path);
        std::process::exit(1);
    });
    let result = tonic::transport::Server::builder()
        .add_service(ImageServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = first_rx.await;
        })
        .await;
    bound.remove();
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(e) => Err(ServeError::Server(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(f: impl FnOnce(&mut AuthConfig)) -> Option<AuthConfig> {
        let mut a = AuthConfig::default();
        f(&mut a);
        Some(a)
    }

    #[test]
    fn auth_config_to_credentials_as_containerd() {
        let c = |a: Option<AuthConfig>| {
            credentials(a.as_ref()).map(|c| c.map(|c| (c.username, c.password)))
        };
        assert_eq!(c(None).unwrap(), None);
        assert_eq!(c(auth(|_| {})).unwrap(), None);
        let up = auth(|a| {
            a.username = "u".into();
            a.password = "p".into();
            a.identity_token = "ignored".into();
        });
        assert_eq!(c(up).unwrap(), Some(("u".into(), "p".into())));
        let b64 = base64::engine::general_purpose::STANDARD.encode("me:s3:cret");
        assert_eq!(
            c(auth(|a| a.auth = b64)).unwrap(),
            Some(("me".into(), "s3:cret".into()))
        );
        let id = auth(|a| {
            a.identity_token = "tok".into();
            a.auth = "bm90OnVzZWQ=".into();
        });
        assert_eq!(c(id).unwrap(), Some((String::new(), "tok".into())));
        assert_eq!(
            c(auth(|a| a.registry_token = "bearer".into())).unwrap(),
            None
        );
        let bad = c(auth(|a| a.auth = "%%%".into())).unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        let bad = c(auth(|a| {
            a.auth = base64::engine::general_purpose::STANDARD.encode("nocolon")
        }))
        .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    }
}
