//! Local forecasts: no cloud service, only the site's coordinates, its arrays and its own history.

pub mod external;
pub mod load;
pub mod solar;
