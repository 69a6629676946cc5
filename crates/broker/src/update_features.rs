//! UpdateFeatures (57): Admin's `updateFeatures`. Rill's feature levels are fixed by its
//! binary (`api_versions`: `group.version`, `share.version`, `transaction.version`), so the
//! only update that succeeds is one to the level a feature already has, which changes
//! nothing, with or without `validate_only`, as in Kafka. Anything else is refused with
//! INVALID_UPDATE_VERSION and the message Kafka 4.4's controller gives where it would refuse
//! too (an unknown upgrade type, a negative level, an unknown feature or a level above the
//! supported range, a downgrade asked for as an upgrade); a level Kafka would move to within
//! the supported range is refused with the same code and a message saying why.
//!
//! As in Kafka, one failing feature fails the whole request: a top-level error whose message
//! names it, and no per-feature results. A success carries one NONE result per feature at
//! versions 0 and 1 (version 2 has no results).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::update_features_request::FeatureUpdateKey;
use kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
use kafka_protocol::messages::{UpdateFeaturesRequest, UpdateFeaturesResponse};
use kafka_protocol::protocol::StrBytes;

use crate::api_versions::FEATURES;
use crate::error::NONE;

/// What Kafka's controller puts before the failing feature's message.
const FAILED_PREFIX: &str =
    "The update failed for all features since the following feature had an error: ";

/// `FeatureUpdate.UpgradeType` on the wire.
const UPGRADE: i8 = 1;
const SAFE_DOWNGRADE: i8 = 2;
const UNSAFE_DOWNGRADE: i8 = 3;

/// Answers an UpdateFeatures request of `version` on node `node_id`.
pub fn handle(node_id: i32, version: i16, r: UpdateFeaturesRequest) -> UpdateFeaturesResponse {
    for update in &r.feature_updates {
        if let Err(reason) = check(node_id, version, update) {
            let message = format!(
                "{FAILED_PREFIX}Invalid update version {} for feature {}. {reason}",
                update.max_version_level, update.feature
            );
            return UpdateFeaturesResponse::default()
                .with_error_code(ResponseError::InvalidUpdateVersion.code())
                .with_error_message(Some(StrBytes::from_string(message)));
        }
    }
    let results = if version <= 1 {
        r.feature_updates
            .into_iter()
            .map(|u| {
                UpdatableFeatureResult::default()
                    .with_feature(u.feature)
                    .with_error_code(NONE)
                    // Kafka sends `Errors.NONE.message()`, the constant's name.
                    .with_error_message(Some(StrBytes::from_static_str("NONE")))
            })
            .collect()
    } else {
        Vec::new()
    };
    UpdateFeaturesResponse::default()
        .with_error_code(NONE)
        .with_error_message(None)
        .with_results(results)
}

/// Whether `update` can be applied: it can only when it asks for the current level.
fn check(node_id: i32, version: i16, update: &FeatureUpdateKey) -> Result<(), String> {
    let upgrade_type = if version == 0 {
        if update.allow_downgrade {
            SAFE_DOWNGRADE
        } else {
            UPGRADE
        }
    } else {
        update.upgrade_type
    };
    if !matches!(upgrade_type, UPGRADE | SAFE_DOWNGRADE | UNSAFE_DOWNGRADE) {
        return Err("The controller does not support the given upgrade type.".into());
    }
    let level = update.max_version_level;
    if level < 0 {
        return Err("A feature version cannot be less than 0.".into());
    }
    let current = FEATURES
        .iter()
        .find(|(name, _)| *name == update.feature.as_str())
        .map(|&(_, current)| current);
    // A feature rill does not have is at level 0, which it may be "set" to.
    let Some(current) = current else {
        if level == 0 {
            return Ok(());
        }
        return Err(format!(
            "Local controller {node_id} does not support this feature."
        ));
    };
    if level > current {
        return Err(format!(
            "Local controller {node_id} only supports versions 0-{current}"
        ));
    }
    if level < current && upgrade_type == UPGRADE {
        return Err(
            "Can't downgrade the version of this feature without setting the upgrade \
                    type to either safe or unsafe downgrade."
                .into(),
        );
    }
    if level != current {
        return Err(format!(
            "rill's feature levels are fixed by its binary: {} is at {current}.",
            update.feature
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(feature: &'static str, level: i16, upgrade_type: i8) -> FeatureUpdateKey {
        FeatureUpdateKey::default()
            .with_feature(StrBytes::from_static_str(feature))
            .with_max_version_level(level)
            .with_upgrade_type(upgrade_type)
    }

    #[test]
    fn only_the_current_level_is_accepted() {
        assert_eq!(check(1, 1, &update("group.version", 1, UPGRADE)), Ok(()));
        assert_eq!(check(1, 1, &update("no.such", 0, UPGRADE)), Ok(()));
        let refused = [
            (
                update("group.version", 2, UPGRADE),
                "only supports versions 0-1",
            ),
            (update("group.version", 0, UPGRADE), "Can't downgrade"),
            (
                update("group.version", 0, SAFE_DOWNGRADE),
                "fixed by its binary",
            ),
            (
                update("group.version", -1, UNSAFE_DOWNGRADE),
                "cannot be less than 0",
            ),
            (update("group.version", 1, 0), "upgrade type"),
            (
                update("no.such", 1, UPGRADE),
                "does not support this feature",
            ),
        ];
        for (u, reason) in refused {
            let err = check(1, 1, &u).expect_err(reason);
            assert!(err.contains(reason), "{err}");
        }
    }

    #[test]
    fn version_zero_reads_allow_downgrade() {
        let mut u = update("transaction.version", 0, 0);
        assert!(check(1, 0, &u).unwrap_err().contains("Can't downgrade"));
        u.allow_downgrade = true;
        assert!(check(1, 0, &u).unwrap_err().contains("fixed by its binary"));
    }
}
