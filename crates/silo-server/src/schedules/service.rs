//! The gRPC ScheduleService: authorization, then the scheduler, then status codes.

use silo_proto::v1::schedule_service_server::ScheduleService;
use silo_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, DeleteScheduleResponse, GetScheduleRequest,
    ListSchedulesRequest, ListSchedulesResponse, MissedPolicy, OverlapPolicy, PauseScheduleRequest,
    ResumeScheduleRequest, Schedule,
};
use tonic::{Request, Response, Status};

use super::store::ScheduleRow;
use super::{ScheduleError, Scheduler};
use crate::auth::{Access, authorize};
use crate::service::timestamp;

impl From<ScheduleError> for Status {
    fn from(e: ScheduleError) -> Status {
        match e {
            ScheduleError::Invalid(m) => Status::invalid_argument(m),
            ScheduleError::NotFound(_) => Status::not_found(e.to_string()),
            ScheduleError::Ambiguous(_) => Status::invalid_argument(e.to_string()),
            ScheduleError::Store(e) => Status::internal(e.to_string()),
            ScheduleError::Jobs(e) => Status::from(e),
        }
    }
}

/// The schedule service over a scheduler.
pub struct ScheduleApi {
    scheduler: Scheduler,
}

impl ScheduleApi {
    /// The service over `scheduler`.
    pub fn new(scheduler: Scheduler) -> ScheduleApi {
        ScheduleApi { scheduler }
    }

    /// The wire form of a stored schedule, with its next firings when `upcoming`.
    fn to_proto(&self, row: ScheduleRow, upcoming: bool) -> Schedule {
        let next = if upcoming {
            self.scheduler.upcoming(&row)
        } else {
            Vec::new()
        };
        Schedule {
            upcoming: next
                .into_iter()
                .filter_map(|t| timestamp(Some(t)))
                .collect(),
            id: row.id,
            spec: Some(row.spec),
            cron: row.cron,
            time_zone: row.tz,
            missed: row.missed as i32,
            overlap: row.overlap as i32,
            paused: row.paused,
            owner: row.owner,
            created_at: timestamp(Some(row.created_at)),
            next_at: timestamp(row.next_at),
            last_fired_at: timestamp(row.last_fired_at),
            last_job_id: row.last_job_id.unwrap_or_default(),
            fired: row.fired,
            skipped: row.skipped,
            last_error: row.last_error,
        }
    }
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    async fn create_schedule(
        &self,
        request: Request<CreateScheduleRequest>,
    ) -> Result<Response<Schedule>, Status> {
        let owner = authorize(&request, Access::Write, "CreateSchedule")?;
        let req = request.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no job spec"))?;
        let missed = match MissedPolicy::try_from(req.missed) {
            Ok(MissedPolicy::Unspecified) => MissedPolicy::Once,
            Ok(p) => p,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown missed policy {}",
                    req.missed
                )));
            }
        };
        let overlap = match OverlapPolicy::try_from(req.overlap) {
            Ok(OverlapPolicy::Unspecified) => OverlapPolicy::Skip,
            Ok(p) => p,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown overlap policy {}",
                    req.overlap
                )));
            }
        };
        let row = ScheduleRow {
            owner,
            spec,
            cron: req.cron,
            tz: req.time_zone,
            missed,
            overlap,
            ..ScheduleRow::default()
        };
        let scheduler = self.scheduler.clone();
        // On a task of its own: a client that goes away does not cut the creation in half.
        let row = tokio::spawn(async move { scheduler.create(row).await })
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(self.to_proto(row, true)))
    }

    async fn get_schedule(
        &self,
        request: Request<GetScheduleRequest>,
    ) -> Result<Response<Schedule>, Status> {
        authorize(&request, Access::Read, "GetSchedule")?;
        let row = self.scheduler.get(&request.get_ref().id).await?;
        Ok(Response::new(self.to_proto(row, true)))
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        authorize(&request, Access::Read, "ListSchedules")?;
        let schedules = self
            .scheduler
            .list()
            .await?
            .into_iter()
            .map(|row| self.to_proto(row, false))
            .collect();
        Ok(Response::new(ListSchedulesResponse { schedules }))
    }

    async fn pause_schedule(
        &self,
        request: Request<PauseScheduleRequest>,
    ) -> Result<Response<Schedule>, Status> {
        authorize(&request, Access::Write, "PauseSchedule")?;
        let row = self.scheduler.pause(&request.get_ref().id).await?;
        Ok(Response::new(self.to_proto(row, true)))
    }

    async fn resume_schedule(
        &self,
        request: Request<ResumeScheduleRequest>,
    ) -> Result<Response<Schedule>, Status> {
        authorize(&request, Access::Write, "ResumeSchedule")?;
        let row = self.scheduler.resume(&request.get_ref().id).await?;
        Ok(Response::new(self.to_proto(row, true)))
    }

    async fn delete_schedule(
        &self,
        request: Request<DeleteScheduleRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        authorize(&request, Access::Write, "DeleteSchedule")?;
        let id = self.scheduler.delete(&request.get_ref().id).await?;
        Ok(Response::new(DeleteScheduleResponse { id }))
    }
}
