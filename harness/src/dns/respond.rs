//! Where a query's response goes: a hickory [`ResponseHandler`] that can also send a kept
//! [`Answer`].

use hickory_proto::rr::Record;
use hickory_server::net::NetError;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use super::cache::Answer;

/// Sends the response to one query.
#[async_trait::async_trait]
pub trait Respond: ResponseHandler {
    /// Sends `answer`, made for `request` or an earlier query like it, with `request`'s ID.
    async fn send_answer(
        &mut self,
        request: &Request,
        answer: &Answer,
    ) -> Result<ResponseInfo, NetError>;
}

/// Any hickory [`ResponseHandler`] (hickory's server hands one to each TCP query): a kept
/// answer is encoded again from its records.
#[derive(Clone)]
pub struct Encoding<R>(pub R);

#[async_trait::async_trait]
impl<R: ResponseHandler> ResponseHandler for Encoding<R> {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        self.0.send_response(response).await
    }
}

#[async_trait::async_trait]
impl<R: ResponseHandler> Respond for Encoding<R> {
    async fn send_answer(
        &mut self,
        request: &Request,
        answer: &Answer,
    ) -> Result<ResponseInfo, NetError> {
        self.0.send_response(answer.response(request)).await
    }
}
