#pragma once
// The model as the engine sees it: models::Model (models/model.h), the same type, so the step,
// the serving handler and the model factory need nothing of the training loop's distributed
// set-up.
#include "models/model.h"

namespace ctrain::engine {

using Model = models::Model;

}  // namespace ctrain::engine
