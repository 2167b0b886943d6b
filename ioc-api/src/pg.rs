//! The PostgreSQL wire protocol (`--pg`, default 127.0.0.1:5433): the same read-only SQL
//! as `POST /api/v1/sql`, for psql, DBeaver, Metabase and Excel.
//!
//! - **Authentication** uses the HTTP tokens: the password is the token, the user is its
//!   role (`analyst`) or its name (`analyst-2`). Only roles that may run SQL (analyst,
//!   admin) can log in. Without configured tokens the server is loopback-only (checked
//!   at start) and trusts local clients, as HTTP does.
//! - **Every statement goes through [`SqlEngine`]**, which refuses anything but queries
//!   (DDL, DML, `COPY`, `SET` of engine settings, ...), applies the memory, time, row
//!   and concurrency limits and the caller's row security, and audits it. Nothing here
//!   executes SQL on its own.
//! - **Client handshakes work**: the pg_catalog tables and functions that clients query
//!   on connect come from `datafusion-pg-catalog`; the session settings drivers send
//!   (`SET extra_float_digits`, `SET application_name`, `BEGIN`, ...) are accepted and
//!   have no effect, and the `SHOW`s they ask are answered.
//! - **Cancel requests work** (psql's Ctrl+C, DBeaver's stop button): each connection
//!   is registered with a random secret, sent in BackendKeyData; pgwire drops the
//!   running statement on a matching cancel request, which stops its execution, and
//!   the engine audits it as cancelled.
//! - **Catalog oids are stable.** `datafusion-pg-catalog` numbers tables as its
//!   provider first lists them. Sessions are built per statement, so a provider per
//!   session numbered them afresh each time, and differently in `pg_class` and
//!   `pg_attribute`: psql's `\d table` (the oid from one statement, the columns by oid
//!   in the next) showed another table's columns. Every session therefore gets one of
//!   two providers kept for the server's life (admins', which list `audit_log`, and
//!   everyone else's), built over the catalog of a session for that kind of caller.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{Sink, SinkExt, stream};
use ioc_query::{Caller, Described, QueryOutput, SqlEngine, SqlError};
use pgwire::api::auth::{
    DefaultServerParameterProvider, LoginInfo, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager, PgWireConnectionState,
    PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::auth::{Permission, Principal, Role, Token, authenticate};

/// Connection metadata keys holding the authenticated principal. Set only by the
/// startup handler after authentication, overwriting anything a client sent.
const KEY_TOKEN: &str = "ioc.token";
const KEY_ROLE: &str = "ioc.role";
const KEY_PROVINCE: &str = "ioc.province";

/// Session settings that drivers send on connect and that change nothing here: values
/// are rendered the same way whatever they say.
const CLIENT_SETTINGS: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "datestyle",
    "intervalstyle",
    "client_encoding",
    "client_min_messages",
    "bytea_output",
    "search_path",
    "standard_conforming_strings",
    "lc_monetary",
    "lc_numeric",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "jit",
];

/// Serves the PostgreSQL protocol on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, handlers: Arc<PgHandlers>, mut shutdown: watch::Receiver<bool>) {
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "PostgreSQL protocol listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let handlers = handlers.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            debug!(%peer, error = %e, "PostgreSQL connection ended with an error");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "could not accept a PostgreSQL connection"),
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Everything a connection needs.
pub struct PgHandlers {
    startup: Arc<TokenStartup>,
    service: Arc<PgService>,
    connections: Arc<ConnectionManager>,
}

impl PgHandlers {
    pub fn new(engine: SqlEngine, tokens: Arc<Vec<Token>>) -> Self {
        let catalogs: [Arc<OnceCell<Arc<dyn SchemaProvider>>>; 2] = Default::default();
        let hooks = catalogs.clone().map(|shared| {
            Arc::new(move |ctx: &SessionContext| {
                pg_catalog(ctx)?;
                if let Some(shared) = shared.get() {
                    let catalog =
                        ctx.catalog("ioc").ok_or_else(|| DataFusionError::Internal("no catalog `ioc`".into()))?;
                    catalog.register_schema("pg_catalog", shared.clone())?;
                }
                Ok(())
            }) as Arc<ioc_query::SessionHook>
        });
        let mut params = DefaultServerParameterProvider::default();
        params.default_transaction_read_only = true;
        params.is_superuser = false;
        let connections = Arc::new(ConnectionManager::new());
        Self {
            startup: Arc::new(TokenStartup {
                tokens,
                params,
                keys: RandomPidSecretKeyGenerator::default(),
                connections: connections.clone(),
            }),
            connections,
            service: Arc::new(PgService {
                parser: Arc::new(PgParser { engine, catalogs, hooks, sql: PostgresCompatibilityParser::new() }),
            }),
        }
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.connections.clone()))
    }
}

/// Registers the PostgreSQL catalog (`pg_catalog.*`, `current_schema()`, ...) that
/// clients read on connect. Reads only the session's own table list.
fn pg_catalog(ctx: &SessionContext) -> Result<(), DataFusionError> {
    datafusion_pg_catalog::pg_catalog::setup_pg_catalog(ctx, "ioc", EmptyContextProvider).map_err(|e| *e)
}

/// Cleartext password authentication against the configured tokens.
struct TokenStartup {
    tokens: Arc<Vec<Token>>,
    params: DefaultServerParameterProvider,
    /// Each connection's process id and secret (sent as BackendKeyData), by which a
    /// client's cancel request, on a connection of its own, names the statement.
    keys: RandomPidSecretKeyGenerator,
    connections: Arc<ConnectionManager>,
}

impl TokenStartup {
    /// The principal for `user` presenting `password`, if the token matches and its
    /// role or name is `user`.
    fn check(&self, user: &str, password: &str) -> Result<Principal, PgWireError> {
        let denied = || PgWireError::InvalidPassword(user.to_string());
        let who = authenticate(&self.tokens, password).ok_or_else(denied)?;
        if user != who.role.as_str() && user != who.name {
            return Err(denied());
        }
        if !who.role.allows(Permission::Sql) {
            return Err(user_error(
                "FATAL",
                "42501",
                format!("role `{}` may not run SQL; use an analyst or admin token", who.role.as_str()),
            ));
        }
        Ok(who)
    }

    async fn finish<C>(&self, client: &mut C, who: &Principal) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let meta = client.metadata_mut();
        meta.insert(KEY_TOKEN.into(), who.name.clone());
        meta.insert(KEY_ROLE.into(), who.role.as_str().into());
        meta.insert(KEY_PROVINCE.into(), who.province.clone().unwrap_or_default());
        info!(token = who.name, "PostgreSQL client authenticated");
        let (pid, secret) = self.keys.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        let (handle, guard) = self.connections.register(pid, secret);
        client.session_extensions().insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        finish_authentication(client, &self.params).await
    }
}

#[async_trait]
impl StartupHandler for TokenStartup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                for key in [KEY_TOKEN, KEY_ROLE, KEY_PROVINCE] {
                    client.metadata_mut().remove(key);
                }
                if self.tokens.is_empty() {
                    // No tokens: loopback only (enforced at start), local clients trusted.
                    return self.finish(client, &Principal::local()).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let pwd = pwd.into_password()?;
                let user = LoginInfo::from_client_info(client).user().unwrap_or_default().to_string();
                match self.check(&user, &pwd.password) {
                    Ok(who) => self.finish(client, &who).await?,
                    Err(e) => {
                        warn!(user, "PostgreSQL authentication failed");
                        return Err(e);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The principal a connection authenticated as.
fn principal<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<Principal> {
    let meta = client.metadata();
    let (Some(name), Some(role)) = (meta.get(KEY_TOKEN), meta.get(KEY_ROLE).and_then(|r| Role::parse(r))) else {
        return Err(user_error("FATAL", "28000", "not authenticated".into()));
    };
    let province = meta.get(KEY_PROVINCE).filter(|p| !p.is_empty()).cloned();
    Ok(Principal { name: name.clone(), role, province })
}

/// What to do with one statement.
#[derive(Debug, Clone)]
enum Action {
    /// Run it through the sandbox.
    Run(String),
    /// A driver's session setting or transaction statement: answer with this tag.
    Accept(&'static str),
    /// A `SHOW` of a PostgreSQL setting: answer `(name, value)`.
    Show(String, String),
}

fn classify(statement: &Statement) -> Action {
    match statement {
        Statement::StartTransaction { .. } => Action::Accept("BEGIN"),
        Statement::Commit { .. } => Action::Accept("COMMIT"),
        Statement::Rollback { .. } => Action::Accept("ROLLBACK"),
        Statement::Set(set) => match set {
            Set::SingleAssignment { variable, .. }
                if CLIENT_SETTINGS.contains(&variable.to_string().to_ascii_lowercase().as_str()) =>
            {
                Action::Accept("SET")
            }
            Set::SetTimeZone { .. } | Set::SetNames { .. } | Set::SetNamesDefault {} | Set::SetTransaction { .. } => {
                Action::Accept("SET")
            }
            _ => Action::Run(statement.to_string()),
        },
        Statement::ShowVariable { variable } => {
            let name = variable.iter().map(|i| i.value.to_ascii_lowercase()).collect::<Vec<_>>().join(" ");
            match show_value(&name) {
                Some(value) => Action::Show(name, value.to_string()),
                None => Action::Run(statement.to_string()),
            }
        }
        _ => Action::Run(statement.to_string()),
    }
}

/// Values of the PostgreSQL settings clients ask for.
fn show_value(name: &str) -> Option<&'static str> {
    Some(match name {
        "transaction isolation level" | "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" => "on",
        "server_version" => "16.0",
        "server_version_num" => "160000",
        "server_encoding" | "client_encoding" => "UTF8",
        "standard_conforming_strings" => "on",
        "search_path" => "public",
        "timezone" | "time zone" => "UTC",
        "datestyle" => "ISO, MDY",
        "integer_datetimes" => "on",
        "max_identifier_length" => "63",
        "lc_collate" | "lc_ctype" => "C.UTF-8",
        _ => return None,
    })
}

fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(severity.into(), code.into(), message)))
}

/// An SQL error with the SQLSTATE a PostgreSQL client expects.
fn sql_error(e: SqlError) -> PgWireError {
    let code = match &e {
        SqlError::NotReadOnly(_) => "25006",
        SqlError::Invalid(_) => "42000",
        SqlError::Timeout(_) | SqlError::Cancelled => "57014",
        SqlError::Memory { .. } => "53200",
        SqlError::CrossJoin { .. } => "54000",
        SqlError::Busy => "53300",
        SqlError::Internal(_) => "XX000",
    };
    user_error("ERROR", code, e.to_string())
}

fn encode(out: QueryOutput, format: &Format) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_schema_to_pg_fields(&out.schema, format, None)?);
    let rows: Vec<PgWireResult<_>> =
        out.batches.into_iter().flat_map(|b: RecordBatch| encode_recordbatch(fields.clone(), b)).collect();
    Ok(QueryResponse::new(fields, stream::iter(rows)))
}

fn show_response(name: &str, value: &str) -> PgWireResult<Response> {
    let schema = arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(name, DataType::Utf8, false)]);
    let batch = RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![Arc::new(arrow::array::StringArray::from(vec![value.to_string()]))],
    )
    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let out = QueryOutput {
        schema: Arc::new(schema),
        batches: vec![batch],
        rows: 1,
        truncated: false,
        elapsed: Default::default(),
    };
    Ok(Response::Query(encode(out, &Format::UnifiedText)?))
}

/// Tells the client that the row cap cut the result (HTTP says `truncated: true`).
async fn notice_truncated<C>(client: &mut C, max_rows: usize) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let info = ErrorInfo::new(
        "NOTICE".into(),
        "01000".into(),
        format!("the result was truncated to the row cap of {max_rows} rows"),
    );
    client.send(PgWireBackendMessage::NoticeResponse(info.into())).await?;
    Ok(())
}

/// Parses statements and plans them for the extended protocol.
struct PgParser {
    engine: SqlEngine,
    /// The shared `pg_catalog` providers: `[others, admins]`.
    catalogs: [Arc<OnceCell<Arc<dyn SchemaProvider>>>; 2],
    /// Session hooks that register them: `[others, admins]`.
    hooks: [Arc<ioc_query::SessionHook>; 2],
    sql: PostgresCompatibilityParser,
}

impl PgParser {
    /// What to do with each statement of `sql`. Text the PostgreSQL dialect cannot
    /// parse (e.g. DataFusion's own `CREATE EXTERNAL TABLE`) goes to the sandbox whole,
    /// which parses it with DataFusion's dialect, refuses or runs it, and audits it.
    fn actions(&self, sql: &str) -> Vec<Action> {
        match self.sql.parse(sql) {
            Ok(statements) => statements.iter().map(classify).collect(),
            Err(_) => vec![Action::Run(sql.to_string())],
        }
    }

    /// `who` as the engine's caller, once the `pg_catalog` provider for its kind of
    /// caller exists.
    async fn caller<'a>(&'a self, who: &'a Principal) -> PgWireResult<Caller<'a>> {
        let admin = who.role == Role::Admin;
        self.catalogs[usize::from(admin)]
            .get_or_try_init(|| async {
                let plain: &ioc_query::SessionHook = &pg_catalog;
                let caller = Caller { token: "pg-catalog", via: "pg", province: None, admin, hook: Some(plain) };
                let template = self.engine.session_for(&caller).await?;
                let internal = |e: DataFusionError| SqlError::Internal(e.to_string());
                let provider = PgCatalogSchemaProvider::try_new(
                    template.state().catalog_list().clone(),
                    Arc::new(PgCatalogStaticTables::try_new().map_err(internal)?),
                    EmptyContextProvider,
                )
                .map_err(internal)?;
                Ok::<_, SqlError>(Arc::new(provider) as Arc<dyn SchemaProvider>)
            })
            .await
            .map_err(sql_error)?;
        Ok(Caller {
            token: &who.name,
            via: "pg",
            province: who.province.as_deref(),
            admin,
            hook: Some(self.hooks[usize::from(admin)].as_ref()),
        })
    }
}

/// A prepared statement: what to do, and for queries, their types.
#[derive(Debug, Clone)]
pub struct Prepared {
    action: Action,
    described: Option<Described>,
}

#[async_trait]
impl QueryParser for PgParser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let who = principal(client)?;
        let Some(action) = self.actions(sql).into_iter().next() else {
            return Ok(None);
        };
        let described = match &action {
            Action::Run(sql) => Some(self.engine.describe(&self.caller(&who).await?, sql).await.map_err(sql_error)?),
            _ => None,
        };
        Ok(Some(Prepared { action, described }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        let Some(d) = &stmt.described else { return Ok(vec![]) };
        d.params.iter().map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type)).collect()
    }

    fn get_result_schema(&self, stmt: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match (&stmt.action, &stmt.described) {
            (_, Some(d)) => arrow_schema_to_pg_fields(&d.schema, format.unwrap_or(&Format::UnifiedText), None),
            (Action::Show(name, _), None) => Ok(vec![FieldInfo::new(
                name.clone(),
                None,
                None,
                Type::VARCHAR,
                format.map_or(pgwire::api::results::FieldFormat::Text, |f| f.format_for(0)),
            )]),
            _ => Ok(vec![]),
        }
    }
}

/// Answers simple and extended queries.
struct PgService {
    parser: Arc<PgParser>,
}

impl PgService {
    async fn answer<C>(
        &self,
        client: &mut C,
        who: &Principal,
        action: Action,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match action {
            Action::Accept(tag) => Ok(Response::Execution(Tag::new(tag))),
            Action::Show(name, value) => show_response(&name, &value),
            Action::Run(sql) => {
                let engine = &self.parser.engine;
                let out = engine.run(&self.parser.caller(who).await?, &sql).await.map_err(sql_error)?;
                if out.truncated {
                    notice_truncated(client, engine.limits().max_rows).await?;
                }
                Ok(Response::Query(encode(out, format)?))
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for PgService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let who = principal(client)?;
        let actions = self.parser.actions(query);
        if actions.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = Vec::with_capacity(actions.len());
        for action in actions {
            out.push(self.answer(client, &who, action, &Format::UnifiedText).await?);
        }
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgService {
    type Statement = Prepared;
    type QueryParser = PgParser;

    fn query_parser(&self) -> Arc<PgParser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let who = principal(client)?;
        let prepared = &portal.statement.statement;
        let (Action::Run(sql), Some(described)) = (&prepared.action, &prepared.described) else {
            return self.answer(client, &who, prepared.action.clone(), &portal.result_column_format).await;
        };
        let types: Vec<Option<&DataType>> = described.params.iter().map(Option::as_ref).collect();
        let params = arrow_pg::datatypes::df::deserialize_parameters(portal, &types)?;
        let engine = &self.parser.engine;
        let out =
            engine.run_with_params(&self.parser.caller(&who).await?, sql, Some(params)).await.map_err(sql_error)?;
        if out.truncated {
            notice_truncated(client, engine.limits().max_rows).await?;
        }
        Ok(Response::Query(encode(out, &portal.result_column_format)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::parse_tokens;

    fn parse(sql: &str) -> Statement {
        PostgresCompatibilityParser::new().parse(sql).unwrap().remove(0)
    }

    #[test]
    fn driver_settings_are_accepted_and_engine_settings_go_to_the_sandbox() {
        for sql in [
            "SET extra_float_digits = 3",
            "SET application_name = 'DBeaver 24.1'",
            "SET TIME ZONE 'Asia/Ho_Chi_Minh'",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "BEGIN",
            "COMMIT",
        ] {
            assert!(matches!(classify(&parse(sql)), Action::Accept(_)), "{sql}");
        }
        for sql in ["SET datafusion.execution.target_partitions = 1", "SET work_mem = '1GB'", "SELECT 1"] {
            assert!(matches!(classify(&parse(sql)), Action::Run(_)), "{sql}");
        }
        assert!(matches!(classify(&parse("SHOW TRANSACTION ISOLATION LEVEL")), Action::Show(_, _)));
    }

    #[test]
    fn login_needs_a_matching_token_whose_role_or_name_is_the_user() {
        let startup = TokenStartup {
            tokens: Arc::new(parse_tokens("viewer:viewer-token-1,analyst@01:analyst-token-1").unwrap()),
            params: DefaultServerParameterProvider::default(),
            keys: RandomPidSecretKeyGenerator::default(),
            connections: Arc::new(ConnectionManager::new()),
        };
        let who = startup.check("analyst", "analyst-token-1").unwrap();
        assert_eq!((who.name.as_str(), who.province.as_deref()), ("analyst-2", Some("01")));
        assert!(startup.check("analyst-2", "analyst-token-1").is_ok());
        assert!(startup.check("admin", "analyst-token-1").is_err(), "user must match the token's role or name");
        assert!(startup.check("analyst", "wrong").is_err());
        let err = startup.check("viewer", "viewer-token-1").unwrap_err().to_string();
        assert!(!err.contains("viewer-token-1"), "errors never echo the token");
    }
}
