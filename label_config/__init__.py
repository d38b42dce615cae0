"""Label Studio labeling configs of agile-modeling (XML files beside this module) and their schema.

``load_config(kind)`` returns the XML of one config; ``parse_rating_config(xml)`` checks that a
project's config has what a binary rating needs (an Image, a Choices over it with a Positive and a
Negative choice) and returns a :class:`RatingSchema` that turns annotations into labels and
probabilities into predictions.
"""

from label_config.schema import CONFIG_KINDS, LabelConfigError, RatingSchema, load_config, parse_rating_config

__all__ = ["CONFIG_KINDS", "LabelConfigError", "RatingSchema", "load_config", "parse_rating_config"]
