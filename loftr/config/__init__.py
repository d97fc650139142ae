"""The run's configuration: its schema, its resolvers and its one check.

- `loftr.config.schema`: the typed structured configs of `train`, `evaluate` and `match`,
  registered in Hydra's ConfigStore, so that a bad choice or an unknown key fails at composition;
- `loftr.config.resolvers`: every `${loftr.*}` resolver (the LR scaling, the run id);
- `loftr.config.command_line`: the entry points compose the command line's config once before
  Hydra runs, so a composition fault is one `error:` line;
- `loftr.config.validate`: `validate(cfg)`, the one check of a composed config before a run,
  which hands each part to the room that owns its rules (model, losses, schedule, data, metrics).

Importing this package registers the schemas and the resolvers; every entry point and the tests'
compose helper import it before Hydra composes. It imports neither torch nor Lightning, and no
other room of `loftr`: `schema` and `resolvers` stand below the model and the data. `validate`
stands above every room it asks, so it is not imported here; entry points and runs import
`loftr.config.validate` themselves.
"""

from loftr.config.resolvers import register_resolvers
from loftr.config.schema import check_additions, plain, register_schemas

register_resolvers()
register_schemas()

__all__ = ["check_additions", "plain", "register_resolvers", "register_schemas"]
