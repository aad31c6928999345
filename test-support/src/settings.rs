//! What each service's settings must hold to, checked by its tests.

use clap::Command;

/// Panics unless `command`'s settings are consistent: clap's own checks, and
/// each flag and value name made from the setting's environment variable
/// (`GRPC_PORT`: `--grpc-port <GRPC_PORT>`), since errors name a setting by them.
pub fn debug_assert_settings(command: Command) {
    let misnamed = |arg: &clap::Arg| {
        let env = arg.get_env()?.to_str()?;
        let long = env.to_lowercase().replace('_', "-");
        let value_names = arg.get_value_names().unwrap_or_default();
        let named = arg.get_long() == Some(long.as_str())
            && value_names.iter().map(|name| name.as_str()).eq([env]);
        (!named).then(|| env.to_owned())
    };
    let misnamed: Vec<String> = command.get_arguments().filter_map(misnamed).collect();
    assert!(
        misnamed.is_empty(),
        "not named by their environment variables: {misnamed:?}"
    );
    command.debug_assert();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "not named by their environment variables: [\"WRONG_NAME\"]")]
    fn a_flag_not_named_by_its_environment_variable_is_found() {
        let arg = clap::Arg::new("x").long("x").env("WRONG_NAME");
        debug_assert_settings(Command::new("test").arg(arg));
    }
}
