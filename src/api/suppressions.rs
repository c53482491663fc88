//! (being written)

use super::ApiState;
use utoipa_axum::router::OpenApiRouter;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
}
